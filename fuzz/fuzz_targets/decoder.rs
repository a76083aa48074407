//! Feeds arbitrary bytes, split at an arbitrary point, through the frame decoder and the
//! envelope and body decoders, and (when the split byte is odd) as a client that accepts binary
//! attachments, through `ServerMessage::decode_frame` and the analysis value reader. Any panic
//! is a bug: the core promises errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loophole_ipc::frame::FrameDecoder;
use loophole_ipc::message::{Command, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut dec = match FrameDecoder::new([0u8; 1032], 1024) {
        Ok(d) => d,
        Err(_) => return,
    };
    dec.set_accept_attachments(split & 1 == 1);
    let mut values = [0.0f32; 4096];
    let cut = usize::from(split).min(data.len());
    for piece in [&data[..cut], &data[cut..]] {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            let mut progressed = n > 0;
            while let Some(r) = dec.next_frame() {
                match r {
                    Ok(f) => {
                        let _ = Command::decode(f.payload);
                        let _ = ServerMessage::decode(f.payload);
                        if let Ok(inc) = ServerMessage::decode_frame(&f) {
                            if let (ServerMessage::Analysis(m), Some(v)) = (inc.message, inc.values) {
                                let _ = m.read_values(&v, &mut values);
                                let _ = v.copy_to(&mut values[..16]);
                            }
                        }
                        progressed = true;
                    }
                    Err(e) if e.is_fatal() => return,
                    Err(_) => progressed = true,
                }
            }
            if !progressed {
                return;
            }
        }
    }
});

//! Feeds arbitrary bytes, split at an arbitrary point, through the frame decoder and the
//! envelope and body decoders. Any panic is a bug: the core promises errors, never panics.
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

//! Encoding and decoding every message allocates nothing: a counting global allocator proves it,
//! and a negative control proves the counter sees allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use loophole_ipc::frame::{FrameDecoder, FrameHeader};
use loophole_ipc::message::{Command, ServerMessage};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// `Cell`, which needs no allocation to access.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn encode_and_decode_of_every_message_allocate_nothing() {
    let mut decoded = 0;
    let n = allocations_in(|| {
        common::for_each_payload(|payload, is_command| {
            let mut framed = [0u8; 4200];
            framed[..8].copy_from_slice(&FrameHeader::json(payload.len() as u32).to_bytes());
            framed[8..8 + payload.len()].copy_from_slice(payload);
            let mut dec = FrameDecoder::without_preface([0u8; 4200], 4096).unwrap();
            dec.push(&framed[..8 + payload.len()]);
            let frame = dec.next_frame().unwrap().unwrap();
            let ok = if is_command {
                Command::decode(frame.payload).is_ok()
            } else {
                ServerMessage::decode(frame.payload).is_ok()
            };
            assert!(ok);
            decoded += 1;
        });
    });
    assert_eq!(decoded, 29);
    assert_eq!(n, 0, "the codec allocated {n} times");
}

/// Issue 14: a spectrum frame with an attachment and one with JSON arrays, encoded, decoded and
/// their values read, without one allocation.
#[test]
fn analysis_frames_in_both_forms_allocate_nothing() {
    use loophole_ipc::message::{encode_frame, encode_frame_with_attachment, Spectrum};
    let mut read = [0.0f32; 1024];
    let n = allocations_in(|| {
        let db = [-42.5f32; 1024];
        let mut out = [0u8; 16_384];
        for attach in [false, true] {
            let body = Spectrum {
                tap: 0,
                bins: 1024,
                sample_rate: 48_000,
                sample: 1,
                missed: 0,
                values: (!attach).then_some(&db[..]),
            };
            let len = if attach {
                encode_frame_with_attachment(None, &body, &db, &mut out, 65_536).unwrap()
            } else {
                encode_frame(None, &body, &mut out, 65_536).unwrap()
            };
            let mut dec = FrameDecoder::without_preface([0u8; 16_400], 16_384).unwrap();
            dec.set_accept_attachments(true);
            dec.push(&out[..len]);
            let frame = dec.next_frame().unwrap().unwrap();
            let inc = ServerMessage::decode_frame(&frame).unwrap();
            let ServerMessage::Analysis(meta) = inc.message else {
                panic!("not analysis")
            };
            assert_eq!(
                meta.read_values(&inc.values.unwrap(), &mut read)
                    .unwrap()
                    .len(),
                1024
            );
        }
    });
    assert_eq!(read[1023], -42.5);
    assert_eq!(n, 0, "the analysis codec allocated {n} times");
}

#[test]
fn decode_errors_allocate_nothing() {
    let bad: [&[u8]; 4] = [
        br#"{"type":"command","name":"ping","id":1,"body":{"nonce":"x"}}"#,
        br#"{"type":"command","name":"nope","id":1,"body":{}}"#,
        b"{\"type\":\xff}",
        br#"{"type":"command""#,
    ];
    let n = allocations_in(|| {
        for b in bad {
            assert!(Command::decode(b).is_err());
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn negative_control_the_counter_sees_an_allocation() {
    let n = allocations_in(|| {
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(16));
        drop(v);
    });
    assert_eq!(n, 1);
}

/// Issue 14: the network thread's analysis path allocates nothing once the session exists:
/// the subscription (decode, table update, ack), `analysis_due`, `analysis_subs` and
/// `send_analysis` in JSON form and with an attachment.
#[test]
fn session_analysis_path_allocates_nothing() {
    use common::AcceptAll as D;
    use loophole_ipc::message::*;
    use loophole_ipc::session::*;
    for attachments in [false, true] {
        let w = common::welcome();
        let cfg = SessionConfig {
            max_frame: 4096,
            handshake_timeout: u64::MAX / 4,
            heartbeat_interval: 1_000_000_000,
            heartbeat_timeout: u64::MAX / 4,
            slow_consumer_timeout: u64::MAX / 4,
            token: None,
            welcome: &w,
            taps: 1,
            attachments,
        };
        let mut s = Session::new(&cfg, vec![0u8; 4104], vec![0u8; 256 * 1024], 0).unwrap();
        let mut input = loophole_ipc::frame::PREFACE.to_vec();
        let mut buf = vec![0u8; 512];
        let hello = Hello {
            protocol: 1,
            client: "t".try_into().unwrap(),
            token: None,
            attachments: true,
        };
        let n = encode_frame(Some(1), &hello, &mut buf, 4096).unwrap();
        input.extend_from_slice(&buf[..n]);
        let sub = SubscribeAnalysis {
            stream: AnalysisStream::Spectrum,
            tap: 0,
            size: 1024,
            rate_hz: 60,
        };
        let n = encode_frame(Some(2), &sub, &mut buf, 4096).unwrap();
        let subscribe = buf[..n].to_vec();
        let values = vec![-80.5f32; 1024];
        let feed = |s: &mut Session<Vec<u8>, Vec<u8>>, b: &[u8], now| {
            s.rx_space()[..b.len()].copy_from_slice(b);
            s.rx_commit(b.len());
            s.poll(now, &mut D);
        };
        feed(&mut s, &input, 1);
        assert_eq!(s.attachments(), attachments);
        let mut sent = 0;
        let n = allocations_in(|| {
            feed(&mut s, &subscribe, 2);
            for now in [3u64, 20_000_000, 40_000_000] {
                assert_eq!(s.analysis_subs().count(), 1);
                let due = s.analysis_due(now).next();
                if let Some(due) = due {
                    let d = AnalysisData {
                        sample: now,
                        missed: 0,
                        samples_per_point: 0,
                        sample_rate: 48_000,
                        values: &values,
                    };
                    s.send_analysis(due, &d, now).unwrap();
                    sent += 1;
                }
                let pending = s.tx_pending().len();
                s.tx_consumed(pending, now);
            }
        });
        assert_eq!(sent, 3);
        assert_eq!(
            n, 0,
            "attachments={attachments}: the analysis path allocated {n} times"
        );
    }
}

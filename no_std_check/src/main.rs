//! Built for `thumbv7em-none-eabihf` (no operating system, no allocator): if anything in the
//! protocol core's dependency graph needs `std` or `alloc`, this fails to link or compile.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use loophole_ipc::frame::{FrameDecoder, PREFACE};
use loophole_ipc::message::{encode_frame, Command, Meters, ParamSet, ServerMessage};
use loophole_ipc::session::{self, Answer, Driver, RouteError, RouteFull, Session};

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

struct NoRoutes;

impl Driver for NoRoutes {
    fn claim(&mut self) -> bool {
        true
    }
    fn release(&mut self) {}
    fn route_audio(&mut self, _: u32, _: &Command) -> Result<(), RouteFull> {
        Ok(())
    }
    fn route_control(&mut self, _: u32, _: &Command) -> Result<(), RouteError> {
        Err(RouteError::Unavailable)
    }
    fn snapshot(
        &mut self,
    ) -> (
        loophole_ipc::message::TransportState,
        loophole_ipc::message::Health,
    ) {
        let t = loophole_ipc::message::TransportState::default();
        (t, Default::default())
    }
}

/// Encodes and decodes frames through the real API; returns a value so nothing is optimised out.
#[no_mangle]
pub extern "C" fn loophole_no_std_roundtrip() -> u32 {
    let mut wire = [0u8; 512];
    wire[..8].copy_from_slice(&PREFACE);
    let cmd = ParamSet {
        node: 1,
        param: 2,
        value: 0.5,
        ramp_ms: None,
    };
    let Ok(n) = encode_frame(Some(7), &cmd, &mut wire[8..], 4096) else {
        return 0;
    };
    let mut dec = FrameDecoder::new([0u8; 264], 256).unwrap_or_else(|_| loop {});
    dec.push(&wire[..8 + n]);
    let mut ok = 0;
    while let Some(Ok(f)) = dec.next_frame() {
        if let Ok((7, Command::ParamSet(p))) = Command::decode(f.payload) {
            ok += p.node;
        }
    }
    let mut out = [0u8; 1024];
    if let Ok(n) = encode_frame(None, &Meters::default(), &mut out, 4096) {
        if ServerMessage::decode(&out[8..n]).is_ok() {
            ok += 1;
        }
    }
    ok + run_session() + attachment_roundtrip()
}

/// Issue 14: a spectrum frame with a binary attachment, written and read back without a heap.
fn attachment_roundtrip() -> u32 {
    use loophole_ipc::message::{encode_frame_with_attachment, Spectrum};
    let db = [-60.0f32; 16];
    let body = Spectrum {
        tap: 0,
        bins: 16,
        sample_rate: 48_000,
        sample: 1,
        missed: 0,
        values: None,
    };
    let mut out = [0u8; 512];
    let Ok(n) = encode_frame_with_attachment(None, &body, &db, &mut out, 4096) else {
        return 0;
    };
    let mut dec = FrameDecoder::without_preface([0u8; 520], 512).unwrap_or_else(|_| loop {});
    dec.set_accept_attachments(true);
    dec.push(&out[..n]);
    let mut values = [0.0f32; 16];
    match dec.next_frame() {
        Some(Ok(f)) => match ServerMessage::decode_frame(&f) {
            Ok(inc) => match (inc.message, inc.values) {
                (ServerMessage::Analysis(m), Some(v)) => {
                    m.read_values(&v, &mut values).map_or(0, |v| v.len() as u32)
                }
                _ => 0,
            },
            Err(_) => 0,
        },
        _ => 0,
    }
}

fn run_session() -> u32 {
    let welcome = loophole_ipc::message::Welcome {
        protocol: 1,
        engine: heapless::String::new(),
        instance: heapless::String::new(),
        sample_rate: 48_000,
        block_size: 128,
        max_frame: 0,
        heartbeat_ms: 0,
        timeout_ms: 0,
        attachments: false,
        taps: 0,
    };
    let cfg = session::SessionConfig {
        max_frame: 1024,
        handshake_timeout: 1_000_000_000,
        heartbeat_interval: 1_000_000_000,
        heartbeat_timeout: 5_000_000_000,
        slow_consumer_timeout: 5_000_000_000,
        token: None,
        welcome: &welcome,
        taps: 1,
        attachments: true,
    };
    let Ok(mut s) = Session::new(&cfg, [0u8; 1032], [0u8; 4096], 0) else {
        return 0;
    };
    let space = s.rx_space();
    space[..8].copy_from_slice(&PREFACE);
    s.rx_commit(8);
    s.poll(1, &mut NoRoutes);
    let _ = s.answer(1, Answer::Ack { sample: None });
    s.tx_pending().len() as u32
}

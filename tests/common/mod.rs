//! Sample messages shared by the codec tests: one value of every message in the catalogue.
#![allow(dead_code)]

use loophole_ipc::message::*;
use loophole_ipc::session::{Driver, RouteError, RouteFull};

/// A driver that takes every command and has no control thread (tests that only need a
/// session to run).
pub struct AcceptAll;

impl Driver for AcceptAll {
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
    fn snapshot(&mut self) -> (TransportState, Health) {
        (TransportState::default(), Health::default())
    }
}

/// The `welcome` a test session is built with: a 48 kHz / 128-frame engine, no attachments, no
/// taps (the session overwrites `max_frame`, the heartbeat fields, `attachments` and `taps`).
pub fn test_welcome() -> Welcome {
    Welcome {
        protocol: 1,
        engine: s("signal/test"),
        instance: s("00000000000000aa"),
        sample_rate: 48_000,
        block_size: 128,
        max_frame: 0,
        heartbeat_ms: 0,
        timeout_ms: 0,
        attachments: false,
        taps: 0,
    }
}

fn s<const N: usize>(v: &str) -> heapless::String<N> {
    heapless::String::try_from(v).unwrap()
}

/// A 64-channel meters body with awkward floats (the expensive case for encoding).
pub fn meters64() -> Meters {
    let mut m = Meters::default();
    for ch in 0..64 {
        m.peak.push(0.9 / (ch as f32 + 1.0)).unwrap();
        m.rms.push(0.3 / (ch as f32 + 1.5)).unwrap();
    }
    m
}

pub fn welcome() -> Welcome {
    Welcome {
        protocol: 1,
        engine: s("signal/0.1.0"),
        instance: s("0123456789abcdef"),
        sample_rate: 48_000,
        block_size: 128,
        max_frame: 65_536,
        heartbeat_ms: 1000,
        timeout_ms: 5000,
        attachments: false,
        taps: 0,
    }
}

/// Calls `f` with the frame payload of one value of every message, client and engine side,
/// and whether it is a command. Encodes into a stack buffer: no allocation.
pub fn for_each_payload(mut f: impl FnMut(&[u8], bool)) {
    let mut buf = [0u8; 4096];
    macro_rules! each {
        ($($id:expr => $body:expr),* $(,)?) => {$({
            let body = $body;
            let n = encode_payload($id, &body, &mut buf).unwrap();
            f(&buf[..n], same_kind(&body));
        })*};
    }
    let edge = Edge {
        from: 1,
        from_port: 0,
        to: 2,
        to_port: 1,
    };
    each! {
        Some(1) => Hello { protocol: 1, client: s("aura/0.1"), token: Some(s("tok\"en")), attachments: false },
        Some(2) => Ping { nonce: 9, t_client_us: Some(5), rt: true },
        Some(3) => Goodbye {},
        Some(4) => Play {},
        Some(5) => Stop {},
        Some(6) => Seek { sample: 48_000 },
        Some(7) => Tempo { bpm: 120.5 },
        Some(8) => Loop { start: 0, end: 96_000, enabled: true },
        Some(9) => ParamSet { node: 3, param: 1, value: 0.25, ramp_ms: Some(10.0) },
        Some(10) => AddNode { node: 4, kind: s("osc") },
        Some(11) => RemoveNode { node: 4 },
        Some(12) => Connect(edge),
        Some(13) => Disconnect(edge),
        Some(14) => Shutdown {},
        Some(15) => Subscribe { stream: Stream::Meters, rate_hz: 30 },
        Some(16) => Unsubscribe { stream: Stream::Health },
        Some(1) => welcome(),
        Some(2) => Pong { nonce: 3, t_client_us: None, t_engine_us: 77, sample: Some(128) },
        Some(3) => Ack { sample: Some(256) },
        Some(5) => error_body(loophole_ipc::ErrorCode::OutOfRange, format_args!("bpm {} too fast", 1000)),
        None => Log { level: LogLevel::Warn, message: s("xrun") },
        None => GoodbyeNotice { reason: GoodbyeReason::Shutdown },
        None => TransportState { playing: true, position: 1 << 40, bpm: 128.0, loop_start: 0, loop_end: 10, loop_enabled: false },
        None => meters64(),
        Some(17) => SubscribeAnalysis { stream: AnalysisStream::Spectrum, tap: 1, size: 1024, rate_hz: 30 },
        Some(18) => UnsubscribeAnalysis { stream: AnalysisStream::Scope, tap: Some(0) },
        None => Scope { tap: 0, points: 16, samples_per_point: 8, sample: 1 << 20, missed: 3, values: Some(&SCOPE) },
        None => Spectrum { tap: 1, bins: 16, sample_rate: 48_000, sample: 1 << 20, missed: 0, values: Some(&SPECTRUM) },
        None => Health { callbacks: 10, xruns: 1, dsp_load: 0.5, cmd_queue_len: 2, cmd_queue_capacity: 256, cmd_queue_high: 9, reply_queue_high: 4, telemetry_dropped: 0, telemetry_shed: 7 },
    }
}

/// 16 scope points (min then max) and a 16-bin spectrum with awkward floats.
pub const SCOPE: [f32; 32] = {
    let mut v = [0.0f32; 32];
    let mut i = 0;
    while i < 16 {
        v[i] = -0.9 / (i as f32 + 1.0);
        v[16 + i] = 0.7 / (i as f32 + 1.5);
        i += 1;
    }
    v
};
pub const SPECTRUM: [f32; 16] = {
    let mut v = [0.0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = -160.0 + 9.7 * i as f32;
        i += 1;
    }
    v
};

fn same_kind<M: Message>(_: &M) -> bool {
    M::KIND == Kind::Command
}

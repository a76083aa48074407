//! A model client and driver around the sans-I/O `Session`, driven by arbitrary bytes. Shared by
//! the `session` fuzz target and by `tests/session_model.rs` (a seeded run under `cargo test`).
//!
//! The bytes choose: commands appended to the client's stream (valid, malformed with a readable
//! id, non-fatal garbage, one oversize header), how many bytes are delivered per read, the end of
//! input, time steps, the audio queue's capacity (queue-full phases), the driver's answers
//! (ack, error, pong), partial reads of the transmit buffer by the client, telemetry, and a
//! server shutdown. Then the model drains: it delivers the rest, half-closes, answers everything,
//! reads everything, and steps time until the session is closed.
//!
//! Invariants (any violation panics):
//! - the session never panics;
//! - no command gets two answers (ids are unique), and no frame follows the engine's `goodbye`
//!   or a fatal error;
//! - nothing is routed once `is_closed()`, and `is_closed()` never goes back to false;
//! - the session closes within a bounded number of polls once the client half-closed;
//! - every complete command received before the end of input (and before a fatal frame or the
//!   client's `goodbye`) got exactly one answer by the time the session is closed, except an
//!   answer the driver gave after a shutdown `goodbye` or a fatal error (counted by
//!   `answers_discarded`);
//! - an rt ping's pong echoes its own `t_client_us`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use loophole_ipc::frame::{FrameDecoder, FrameHeader, PREFACE};
use loophole_ipc::message::*;
use loophole_ipc::session::*;
use loophole_ipc::ErrorCode;

const MS: Nanos = 1_000_000;
const MAX_FRAME: u32 = 4096;
const FLUSH: Nanos = 40 * MS;

#[derive(Default)]
struct Mock {
    /// (id, an rt ping?, its `t_client_us`).
    audio: VecDeque<(u32, bool, Option<u64>)>,
    /// Rt pings with a time routed and not yet answered; past `RT_PING_SLOTS` the session's
    /// memory drops the oldest, so a driver passing `None` may see a pong without the time.
    timed_pings: usize,
    memory_overflowed: bool,
    audio_cap: usize,
    control: VecDeque<u32>,
    routed: u64,
}

impl Driver for Mock {
    fn claim(&mut self) -> bool {
        true
    }
    fn release(&mut self) {}
    fn route_audio(&mut self, id: u32, cmd: &Command) -> Result<(), RouteFull> {
        if self.audio.len() >= self.audio_cap {
            return Err(RouteFull);
        }
        self.routed += 1;
        let (ping, t) = match cmd {
            Command::Ping(p) => (true, p.t_client_us),
            _ => (false, None),
        };
        if t.is_some() {
            self.timed_pings += 1;
            self.memory_overflowed |= self.timed_pings > RT_PING_SLOTS;
        }
        self.audio.push_back((id, ping, t));
        Ok(())
    }
    fn route_control(&mut self, id: u32, _cmd: &Command) -> Result<(), RouteError> {
        self.routed += 1;
        self.control.push_back(id);
        Ok(())
    }
    fn snapshot(&mut self) -> (TransportState, Health) {
        (TransportState::default(), Health::default())
    }
}

/// What the model sent, in stream order.
struct Sent {
    id: Option<u32>,
    end: usize,
    /// The client's `goodbye`: nothing after it is read.
    goodbye: bool,
    /// A fatal header: nothing after its start is read.
    fatal_at: Option<usize>,
    ping_t: Option<u64>,
}

struct Model<'a> {
    data: &'a [u8],
    s: Session<Vec<u8>, Vec<u8>>,
    d: Mock,
    stream: Vec<u8>,
    delivered: usize,
    sent: Vec<Sent>,
    next_id: u32,
    now: Nanos,
    eof: bool,
    shut: bool,
    wire: FrameDecoder<Vec<u8>>,
    answers: BTreeMap<u32, u32>,
    goodbye_seen: bool,
    /// A fatal error (`frame_too_large`) was received: like `goodbye`, nothing may follow it.
    fatal_seen: bool,
    held: Vec<(u32, Answer)>,
    lost: BTreeSet<u32>,
    closed_once: bool,
    routed_at_close: u64,
    pongs: BTreeMap<u32, Option<u64>>,
}

impl<'a> Model<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        b
    }

    fn push_frame<M: Message>(&mut self, body: &M, id: Option<u32>, ping_t: Option<u64>) {
        let mut buf = vec![0u8; 8192];
        let n = encode_frame(id, body, &mut buf, u32::MAX).expect("model frames encode");
        self.stream.extend_from_slice(&buf[..n]);
        let goodbye = M::NAME == "goodbye";
        self.sent.push(Sent {
            id,
            end: self.stream.len(),
            goodbye,
            fatal_at: None,
            ping_t,
        });
    }

    fn push_raw(&mut self, payload: &[u8], id: Option<u32>, flags: u8) {
        let mut h = FrameHeader::json(payload.len() as u32).to_bytes();
        h[5] = flags;
        self.stream.extend_from_slice(&h);
        self.stream.extend_from_slice(payload);
        let id = if flags == 0 { id } else { None };
        self.sent.push(Sent {
            id,
            end: self.stream.len(),
            goodbye: false,
            fatal_at: None,
            ping_t: None,
        });
    }

    fn add_command(&mut self) {
        let kind = self.byte();
        let id = self.next_id;
        self.next_id += 1;
        let arg = self.byte();
        match kind % 12 {
            0 => self.push_frame(&Play {}, Some(id), None),
            1 => self.push_frame(
                &ParamSet {
                    node: u32::from(arg),
                    param: 1,
                    value: 0.5,
                    ramp_ms: None,
                },
                Some(id),
                None,
            ),
            2 | 3 => {
                let t = arg.is_multiple_of(2).then_some(u64::from(id) * 7);
                let rt = kind % 12 == 2;
                let ping = Ping {
                    nonce: id,
                    t_client_us: t,
                    rt,
                };
                self.push_frame(&ping, Some(id), if rt { t } else { None });
                self.pongs.insert(id, t);
            }
            4 => self.push_frame(&RemoveNode { node: 1 }, Some(id), None),
            5 => self.push_frame(&Tempo { bpm: 1.0 }, Some(id), None), // out of range
            6 => {
                let p = format!(r#"{{"type":"command","name":"param.set","id":{id},"body":{{}}}}"#);
                self.push_raw(p.as_bytes(), Some(id), 0);
            }
            7 => self.push_raw(b"{not json", None, 0),
            8 => self.push_raw(b"{}", None, 1), // bad header: skipped, answered without ref
            9 => {
                let sub = Subscribe {
                    stream: Stream::Transport,
                    rate_hz: 120,
                };
                self.push_frame(&sub, Some(id), None);
            }
            10 if arg == 0xff => self.push_frame(&Goodbye {}, Some(id), None),
            10 if arg == 0xfe => {
                let at = self.stream.len();
                self.stream
                    .extend_from_slice(&FrameHeader::json(MAX_FRAME + 1).to_bytes());
                self.sent.push(Sent {
                    id: None,
                    end: self.stream.len(),
                    goodbye: false,
                    fatal_at: Some(at),
                    ping_t: None,
                });
            }
            _ => self.push_frame(&Stop {}, Some(id), None),
        }
    }

    fn deliver(&mut self, max: usize) {
        if self.eof {
            return;
        }
        let space = self.s.rx_space();
        let k = space.len().min(max).min(self.stream.len() - self.delivered);
        space[..k].copy_from_slice(&self.stream[self.delivered..self.delivered + k]);
        self.s.rx_commit(k);
        self.delivered += k;
    }

    fn poll(&mut self) {
        self.s.poll(self.now, &mut self.d);
        self.check_closed();
    }

    fn check_closed(&mut self) {
        if self.closed_once {
            assert!(self.s.is_closed(), "is_closed went back to false");
            assert_eq!(self.d.routed, self.routed_at_close, "routed after closing");
        } else if self.s.is_closed() {
            self.closed_once = true;
            self.routed_at_close = self.d.routed;
        }
    }

    fn read_tx(&mut self, max: usize) {
        let pending = self.s.tx_pending();
        let k = pending.len().min(max);
        let bytes = pending[..k].to_vec();
        self.s.tx_consumed(k, self.now);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = self.wire.push(rest);
            rest = &rest[n..];
            while let Some(f) = self.wire.next_frame() {
                let f = f.expect("engine frames are valid");
                let (r, m) = ServerMessage::decode(f.payload).expect("engine messages decode");
                assert!(!self.goodbye_seen, "a frame after goodbye: {m:?}");
                assert!(!self.fatal_seen, "a frame after a fatal error: {m:?}");
                if let ServerMessage::Goodbye(_) = m {
                    self.goodbye_seen = true;
                }
                if let ServerMessage::Error(e) = &m {
                    self.fatal_seen |= e.code.as_str() == "frame_too_large";
                }
                if let (Some(r), ServerMessage::Pong(p)) = (r, &m) {
                    let want = self.pongs.get(&r).copied().flatten();
                    let forgotten = p.t_client_us.is_none() && self.d.memory_overflowed;
                    assert!(
                        p.t_client_us == want || forgotten,
                        "pong {r} echoes its own ping's time: {:?}, want {want:?}",
                        p.t_client_us
                    );
                }
                if let Some(r) = r {
                    let n = self.answers.entry(r).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "two answers to command {r}");
                }
            }
            assert!(n > 0 || rest.is_empty(), "client decoder stalled");
        }
    }

    fn give(&mut self, id: u32, a: Answer) {
        let before = self.s.answers_discarded();
        match self.s.answer(id, a) {
            Ok(()) => {
                if self.s.answers_discarded() > before {
                    self.lost.insert(id);
                }
            }
            Err(a) => self.held.push((id, a)),
        }
        self.check_closed();
    }

    fn answer_some(&mut self, n: usize, mood: u8) {
        let held = std::mem::take(&mut self.held);
        for (id, a) in held {
            self.give(id, a);
        }
        for _ in 0..n {
            if self.d.audio.is_empty() && self.d.control.is_empty() {
                break;
            }
            if let Some((id, ping, t)) = self.d.audio.pop_front() {
                if t.is_some() {
                    self.d.timed_pings -= 1;
                }
                let a = if ping {
                    // Like the network thread (the ping's own time), or `None`: the session's
                    // memory then supplies it.
                    Answer::Pong {
                        nonce: id,
                        t_client_us: t.filter(|_| mood % 2 == 1),
                        sample: Some(1),
                    }
                } else if mood.is_multiple_of(3) {
                    Answer::Error {
                        code: ErrorCode::UnknownNode,
                        detail: "no node",
                    }
                } else {
                    Answer::Ack { sample: Some(1) }
                };
                self.give(id, a);
            }
            if let Some(id) = self.d.control.pop_front() {
                self.give(id, Answer::Ack { sample: None });
            }
        }
    }

    fn telemetry(&mut self) {
        for st in self.s.telemetry_due(self.now).iter() {
            let t = TransportState::default();
            self.s.send_telemetry(st, &t, self.now);
        }
    }
}

/// Runs the model on `data`; panics on a violated invariant.
pub fn run(data: &[u8]) {
    let w = Welcome {
        protocol: 1,
        engine: "signal/fuzz".try_into().unwrap(),
        instance: "00000000000000aa".try_into().unwrap(),
        sample_rate: 48_000,
        block_size: 128,
        max_frame: 0,
        heartbeat_ms: 0,
        timeout_ms: 0,
        attachments: false,
        taps: 0,
    };
    // Liveness limits far away: the session may only end by the client or the shutdown, so
    // completeness is expected of every run.
    let cfg = SessionConfig {
        max_frame: MAX_FRAME,
        handshake_timeout: 1 << 50,
        heartbeat_interval: 1 << 40,
        heartbeat_timeout: 1 << 50,
        slow_consumer_timeout: 1 << 50,
        token: None,
        welcome: &w,
        attachments: false,
        taps: 0,
    };
    let tx = ANSWER_ROOM + TELEMETRY_RESERVE + usize::from(data.first().copied().unwrap_or(0)) * 8;
    let mut s = Session::new(&cfg, vec![0u8; 8 + MAX_FRAME as usize], vec![0u8; tx], 0).unwrap();
    s.set_flush_timeout(FLUSH);
    let mut m = Model {
        data,
        s,
        d: Mock {
            audio_cap: 4,
            ..Mock::default()
        },
        stream: PREFACE.to_vec(),
        delivered: 0,
        sent: Vec::new(),
        next_id: 2,
        now: 0,
        eof: false,
        shut: false,
        wire: FrameDecoder::new(vec![0u8; 8 + 65_536], 65_536).unwrap(),
        answers: BTreeMap::new(),
        goodbye_seen: false,
        fatal_seen: false,
        held: Vec::new(),
        lost: BTreeSet::new(),
        closed_once: false,
        routed_at_close: 0,
        pongs: BTreeMap::new(),
    };
    let hello = Hello {
        protocol: 1,
        client: "fuzz".try_into().unwrap(),
        token: None,
        attachments: false,
    };
    m.push_frame(&hello, Some(1), None);
    let mut ops = 0;
    while !m.data.is_empty() && ops < 2_000 {
        ops += 1;
        let op = m.byte();
        match op % 16 {
            0..=4 => m.add_command(),
            5 | 6 => {
                let k = usize::from(m.byte()) * 4 + 1;
                m.deliver(k);
            }
            7 => {
                if m.byte().is_multiple_of(8) && !m.eof {
                    m.eof = true;
                    m.s.rx_eof();
                }
            }
            8 => m.now += u64::from(m.byte()) * MS / 4,
            9 => m.d.audio_cap = usize::from(m.byte() % 5),
            10 => {
                let (n, mood) = (usize::from(m.byte() % 8), m.byte());
                m.answer_some(n, mood);
            }
            11 => {
                let k = usize::from(m.byte()) * 16;
                m.read_tx(k);
            }
            12 => m.telemetry(),
            13 => {
                if m.byte() == 0x5a && !m.shut {
                    m.shut = true;
                    m.s.shutdown(m.now);
                    m.check_closed();
                }
            }
            _ => m.poll(),
        }
    }
    // Drain: the client sends the rest, half-closes, and reads everything; the driver answers.
    m.d.audio_cap = usize::MAX;
    for _ in 0..10_000 {
        m.deliver(usize::MAX);
        if !m.eof && (m.delivered == m.stream.len() || m.s.rx_space().is_empty()) {
            m.eof = true;
            m.s.rx_eof();
        }
        m.poll();
        m.answer_some(usize::MAX >> 1, 1);
        m.telemetry();
        m.read_tx(usize::MAX);
        if m.s.is_closed() && m.held.is_empty() && m.s.tx_pending().is_empty() {
            break;
        }
        m.now += MS;
    }
    assert!(
        m.s.is_closed(),
        "not closed after the client half-closed: {:?}",
        m.s.state()
    );
    m.read_tx(usize::MAX);
    // Completeness: what the session received before it stopped reading.
    let mut limit = m.delivered;
    for f in &m.sent {
        if let Some(at) = f.fatal_at {
            limit = limit.min(at);
        }
    }
    let mut after_goodbye = false;
    for f in &m.sent {
        if f.end > limit || after_goodbye {
            break;
        }
        after_goodbye = f.goodbye;
        let Some(id) = f.id else { continue };
        if m.lost.contains(&id) {
            assert!(
                m.shut || m.fatal_seen,
                "an answer discarded without a shutdown or fatal error: {id}"
            );
            continue;
        }
        assert_eq!(
            m.answers.get(&id).copied(),
            Some(1),
            "command {id} (rt ping time {:?}) complete before the end of input was not answered once",
            f.ping_t
        );
    }
    for r in m.answers.keys() {
        assert!(
            *r == 1 || m.sent.iter().any(|f| f.id == Some(*r)),
            "answer to nothing: {r}"
        );
    }
}

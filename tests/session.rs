//! Deterministic tests of the session state machine: one fixture per state, time advanced by the
//! test, no sockets, no sleeps. Plus a seeded simulation with partial reads/writes, resets and
//! delays that checks every accepted command is answered exactly once.

mod common;

use std::collections::{BTreeMap, VecDeque};

use loophole_ipc::frame::{FrameDecoder, FrameHeader, HEADER_LEN, PREFACE};
use loophole_ipc::message::*;
use loophole_ipc::session::*;
use loophole_ipc::ErrorCode;

const MS: Nanos = 1_000_000;
const MAX_FRAME: u32 = 4096;

fn welcome() -> Welcome {
    common::test_welcome()
}

fn config<'a>(w: &'a Welcome, token: Option<&'a [u8]>) -> SessionConfig<'a> {
    SessionConfig {
        max_frame: MAX_FRAME,
        handshake_timeout: 100 * MS,
        heartbeat_interval: 50 * MS,
        heartbeat_timeout: 200 * MS,
        slow_consumer_timeout: 300 * MS,
        token,
        welcome: w,
        attachments: false,
        taps: 0,
    }
}

/// A driver with a bounded audio queue the test drains by hand.
#[derive(Default)]
struct Mock {
    audio: VecDeque<(u32, Command)>,
    audio_cap: usize,
    control: VecDeque<(u32, Command)>,
    control_available: bool,
    busy: bool,
    claims: u32,
    releases: u32,
}

impl Mock {
    fn new() -> Self {
        Self {
            audio_cap: 4,
            control_available: true,
            ..Default::default()
        }
    }
}

impl Driver for Mock {
    fn claim(&mut self) -> bool {
        if self.busy {
            return false;
        }
        self.claims += 1;
        true
    }
    fn release(&mut self) {
        self.releases += 1;
    }
    fn route_audio(&mut self, id: u32, cmd: &Command) -> Result<(), RouteFull> {
        if self.audio.len() >= self.audio_cap {
            return Err(RouteFull);
        }
        self.audio.push_back((id, cmd.clone()));
        Ok(())
    }
    fn route_control(&mut self, id: u32, cmd: &Command) -> Result<(), RouteError> {
        if !self.control_available {
            return Err(RouteError::Unavailable);
        }
        self.control.push_back((id, cmd.clone()));
        Ok(())
    }
    fn snapshot(&mut self) -> (TransportState, Health) {
        let t = TransportState::default();
        (t, Health::default())
    }
}

type Sess = Session<Vec<u8>, Vec<u8>>;

fn frame<M: Message>(id: u32, m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let n = encode_frame(Some(id), m, &mut buf, u32::MAX).unwrap();
    buf.truncate(n);
    buf
}

fn hello(token: Option<&str>) -> Hello {
    Hello {
        protocol: 1,
        client: "test".try_into().unwrap(),
        token: token.map(|t| t.try_into().unwrap()),
        attachments: false,
    }
}

/// The test's view of the wire: what the client has received so far.
struct Wire {
    dec: FrameDecoder<Vec<u8>>,
}

impl Wire {
    fn new() -> Self {
        Self {
            dec: FrameDecoder::new(vec![0u8; 70_000], 65_536).unwrap(),
        }
    }

    /// Takes everything the session has to send and decodes it.
    fn take(&mut self, s: &mut Sess, now: Nanos) -> Vec<(Option<u32>, ServerMessage)> {
        let out = s.tx_pending().to_vec();
        s.tx_consumed(out.len(), now);
        assert_eq!(self.dec.push(&out), out.len());
        let mut got = Vec::new();
        while let Some(f) = self.dec.next_frame() {
            got.push(ServerMessage::decode(f.unwrap().payload).unwrap());
        }
        got
    }
}

fn send(s: &mut Sess, bytes: &[u8]) {
    let space = s.rx_space();
    assert!(
        space.len() >= bytes.len(),
        "rx space {} < {}",
        space.len(),
        bytes.len()
    );
    space[..bytes.len()].copy_from_slice(bytes);
    s.rx_commit(bytes.len());
}

fn new_session(w: &Welcome, token: Option<&[u8]>) -> Sess {
    Session::new(
        &config(w, token),
        vec![0u8; HEADER_LEN + MAX_FRAME as usize],
        vec![0u8; 8192],
        0,
    )
    .unwrap()
}

/// Fixture: a session that has seen the preface (state Handshake).
fn session_handshake(w: &Welcome, d: &mut Mock) -> (Sess, Wire) {
    let mut s = new_session(w, None);
    assert_eq!(s.state(), SessionState::Preface);
    send(&mut s, &PREFACE);
    s.poll(0, d);
    assert_eq!(s.state(), SessionState::Handshake);
    (s, Wire::new())
}

/// Fixture: an open session with the welcome and snapshot already read.
fn session_open(w: &Welcome, d: &mut Mock) -> (Sess, Wire) {
    let (mut s, mut wire) = session_handshake(w, d);
    send(&mut s, &frame(1, &hello(None)));
    s.poll(MS, d);
    assert_eq!(s.state(), SessionState::Open);
    let got = wire.take(&mut s, MS);
    assert!(
        matches!(got[0], (Some(1), ServerMessage::Welcome(_))),
        "{got:?}"
    );
    (s, wire)
}

fn error_code(m: &(Option<u32>, ServerMessage)) -> (Option<u32>, String) {
    match m {
        (r, ServerMessage::Error(e)) => (*r, e.code.to_string()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn handshake_sends_preface_welcome_and_snapshot() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, _) = session_handshake(&w, &mut d);
    send(&mut s, &frame(1, &hello(None)));
    s.poll(MS, &mut d);
    assert_eq!(&s.tx_pending()[..8], &PREFACE);
    let got = Wire::new().take(&mut s, MS);
    let ServerMessage::Welcome(wel) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(
        (wel.max_frame, wel.heartbeat_ms, wel.timeout_ms),
        (MAX_FRAME, 50, 200)
    );
    assert!(matches!(got[1], (None, ServerMessage::Transport(_))));
    assert!(matches!(got[2], (None, ServerMessage::Health(_))));
    assert_eq!(got.len(), 3);
    assert_eq!(d.claims, 1);
}

#[test]
fn bad_preface_closes_silently() {
    let w = welcome();
    let mut d = Mock::new();
    let mut s = new_session(&w, None);
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    s.poll(0, &mut d);
    assert!(s.is_closed());
    assert!(
        s.tx_pending().is_empty(),
        "nothing is sent to a non-protocol peer"
    );
    assert_eq!(s.rx_space().len(), 0, "nothing more is read");
}

#[test]
fn handshake_failures() {
    let w = welcome();
    // Wrong version: error with ref, then closed.
    let mut d = Mock::new();
    let (mut s, mut wire) = session_handshake(&w, &mut d);
    send(
        &mut s,
        &frame(
            5,
            &Hello {
                protocol: 2,
                ..hello(None)
            },
        ),
    );
    s.poll(MS, &mut d);
    assert_eq!(
        error_code(&wire.take(&mut s, MS)[0]),
        (Some(5), "protocol_version".into())
    );
    assert!(s.is_closed());
    // Command before hello: error, session still waits for hello.
    let (mut s, mut wire) = session_handshake(&w, &mut d);
    send(&mut s, &frame(6, &Play {}));
    s.poll(MS, &mut d);
    assert_eq!(
        error_code(&wire.take(&mut s, MS)[0]),
        (Some(6), "hello_required".into())
    );
    assert_eq!(s.state(), SessionState::Handshake);
    // Timeout.
    s.poll(100 * MS, &mut d);
    assert_eq!(
        error_code(&wire.take(&mut s, MS)[0]),
        (None, "handshake_timeout".into())
    );
    assert!(s.is_closed());
    // Busy.
    d.busy = true;
    let (mut s, mut wire) = session_handshake(&w, &mut d);
    send(&mut s, &frame(7, &hello(None)));
    s.poll(MS, &mut d);
    assert_eq!(
        error_code(&wire.take(&mut s, MS)[0]),
        (Some(7), "session_busy".into())
    );
    assert!(s.is_closed());
    assert_eq!(
        d.releases, 0,
        "a session that never claimed releases nothing"
    );
}

#[test]
fn token_is_checked() {
    let w = welcome();
    let mut d = Mock::new();
    for (given, ok) in [
        (Some("s3cret"), true),
        (Some("s3creT"), false),
        (Some("s3cret!"), false),
        (None, false),
    ] {
        let mut s = new_session(&w, Some(b"s3cret"));
        send(&mut s, &PREFACE);
        send(&mut s, &frame(1, &hello(given)));
        s.poll(0, &mut d);
        let got = Wire::new().take(&mut s, 0);
        if ok {
            assert!(matches!(got[0].1, ServerMessage::Welcome(_)));
        } else {
            assert_eq!(error_code(&got[0]), (Some(1), "bad_token".into()));
            assert!(s.is_closed());
        }
    }
}

#[test]
fn open_session_routes_commands() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(10, &Play {}));
    send(
        &mut s,
        &frame(
            11,
            &AddNode {
                node: 1,
                kind: "osc".try_into().unwrap(),
            },
        ),
    );
    send(
        &mut s,
        &frame(
            12,
            &Ping {
                nonce: 4,
                t_client_us: Some(99),
                rt: false,
            },
        ),
    );
    send(
        &mut s,
        &frame(
            13,
            &Ping {
                nonce: 5,
                t_client_us: Some(77),
                rt: true,
            },
        ),
    );
    send(&mut s, &frame(14, &hello(None)));
    s.poll(2 * MS, &mut d);
    assert_eq!(
        d.audio.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [10, 13]
    );
    assert_eq!(
        d.control.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [11]
    );
    assert_eq!(s.in_flight(), 3);
    let got = wire.take(&mut s, 2 * MS);
    assert!(matches!(
        got[0],
        (
            Some(12),
            ServerMessage::Pong(Pong {
                nonce: 4,
                t_client_us: Some(99),
                t_engine_us: 2000,
                sample: None
            })
        )
    ));
    assert_eq!(
        error_code(&got[1]),
        (Some(14), "already_established".into())
    );
    // The driver answers.
    s.answer(10, Answer::Ack { sample: Some(128) }).unwrap();
    s.answer(
        13,
        Answer::Pong {
            nonce: 5,
            t_client_us: None,
            sample: Some(256),
        },
    )
    .unwrap();
    s.answer(
        11,
        Answer::Error {
            code: ErrorCode::NodeExists,
            detail: "node 1 exists",
        },
    )
    .unwrap();
    assert_eq!(s.in_flight(), 0);
    let got = wire.take(&mut s, 3 * MS);
    assert_eq!(
        got[0],
        (Some(10), ServerMessage::Ack(Ack { sample: Some(128) }))
    );
    assert!(matches!(
        got[1],
        (
            Some(13),
            ServerMessage::Pong(Pong {
                nonce: 5,
                t_client_us: Some(77),
                sample: Some(256),
                ..
            })
        )
    ));
    assert_eq!(error_code(&got[2]), (Some(11), "node_exists".into()));
}

#[test]
fn bad_frames_get_precise_errors_and_the_session_stays_open() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    let raw = |payload: &[u8]| {
        let mut f = FrameHeader::json(payload.len() as u32).to_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    };
    send(
        &mut s,
        &raw(br#"{"type":"command","name":"nope","id":3,"body":{}}"#),
    );
    send(
        &mut s,
        &raw(br#"{"type":"command","name":"ping","id":4,"body":{"nonce":"x"}}"#),
    );
    send(&mut s, &raw(br#"{"type":"command","#));
    send(&mut s, &raw(b"\xff\xfe"));
    send(
        &mut s,
        &raw(br#"{"type":"command","name":"transport.tempo","id":5,"body":{"bpm":5}}"#),
    );
    let mut enc2 = FrameHeader::json(2);
    enc2.encoding = 2;
    send(&mut s, &enc2.to_bytes());
    send(&mut s, b"{}");
    send(
        &mut s,
        &frame(
            6,
            &Ping {
                nonce: 1,
                t_client_us: None,
                rt: false,
            },
        ),
    );
    s.poll(2 * MS, &mut d);
    let got: Vec<_> = wire.take(&mut s, 2 * MS);
    let codes: Vec<_> = got[..6].iter().map(error_code).collect();
    assert_eq!(
        codes,
        [
            (Some(3), "unknown_message".to_string()),
            (Some(4), "invalid_field".into()),
            (None, "invalid_json".into()),
            (None, "invalid_utf8".into()),
            (Some(5), "out_of_range".into()),
            (None, "unsupported_encoding".into()),
        ]
    );
    assert!(matches!(got[6], (Some(6), ServerMessage::Pong(_))));
    assert_eq!(s.state(), SessionState::Open);
}

#[test]
fn oversize_frame_is_fatal_without_buffering() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &FrameHeader::json(MAX_FRAME + 1).to_bytes());
    s.poll(2 * MS, &mut d);
    let got = wire.take(&mut s, 2 * MS);
    assert_eq!(error_code(&got[0]), (None, "frame_too_large".into()));
    let ServerMessage::Error(e) = &got[0].1 else {
        unreachable!()
    };
    assert!(
        e.message.contains("4097") && e.message.contains("4096"),
        "{}",
        e.message
    );
    assert!(s.is_closed());
    assert_eq!(d.releases, 1);
}

#[test]
fn pre_welcome_limit_applies_before_hello() {
    let w = welcome();
    let mut d = Mock::new();
    let cfg = SessionConfig {
        max_frame: 65_536,
        ..config(&w, None)
    };
    let mut s: Sess = Session::new(&cfg, vec![0u8; 65_544], vec![0u8; 8192], 0).unwrap();
    send(&mut s, &PREFACE);
    send(&mut s, &FrameHeader::json(5000).to_bytes());
    s.poll(0, &mut d);
    let got = Wire::new().take(&mut s, 0);
    assert_eq!(error_code(&got[0]), (None, "frame_too_large".into()));
}

#[test]
fn heartbeat_timeout_closes_with_goodbye() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    assert_eq!(s.poll_at(), Some(201 * MS));
    s.poll(150 * MS, &mut d);
    assert_eq!(s.state(), SessionState::Open);
    send(
        &mut s,
        &frame(
            2,
            &Ping {
                nonce: 1,
                t_client_us: None,
                rt: false,
            },
        ),
    );
    s.poll(150 * MS, &mut d);
    s.poll(349 * MS, &mut d);
    assert_eq!(
        s.state(),
        SessionState::Open,
        "the ping at 150 ms reset the timer"
    );
    s.poll(350 * MS, &mut d);
    let got = wire.take(&mut s, 350 * MS);
    assert_eq!(
        got.last().unwrap().1,
        ServerMessage::Goodbye(GoodbyeNotice {
            reason: GoodbyeReason::HeartbeatTimeout
        })
    );
    assert!(s.is_closed());
    assert_eq!(d.releases, 1);
}

#[test]
fn full_audio_queue_pauses_reading_and_loses_nothing() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 2;
    let (mut s, mut wire) = session_open(&w, &mut d);
    for id in 100..110 {
        send(
            &mut s,
            &frame(
                id,
                &Seek {
                    sample: u64::from(id),
                },
            ),
        );
    }
    s.poll(2 * MS, &mut d);
    assert_eq!(d.audio.len(), 2);
    assert!(s.is_blocked());
    // Nothing was answered with an error, nothing dropped.
    assert!(wire.take(&mut s, 2 * MS).is_empty());
    let mut answered = Vec::new();
    for step in 0..20 {
        while let Some((id, _)) = d.audio.pop_front() {
            s.answer(
                id,
                Answer::Ack {
                    sample: Some(id.into()),
                },
            )
            .unwrap();
        }
        s.poll((3 + step) * MS, &mut d);
        for (r, m) in wire.take(&mut s, (3 + step) * MS) {
            assert!(matches!(m, ServerMessage::Ack(_)));
            answered.push(r.unwrap());
        }
    }
    assert_eq!(answered, (100..110).collect::<Vec<_>>());
}

#[test]
fn rx_space_closes_when_frames_back_up() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 0;
    let (mut s, _) = session_open(&w, &mut d);
    let f = frame(1, &Play {});
    let mut sent = 0;
    while s.rx_space().len() >= f.len() {
        send(&mut s, &f);
        s.poll(2 * MS, &mut d);
        sent += 1;
        assert!(sent < 10_000);
    }
    s.poll(2 * MS, &mut d);
    assert!(
        s.rx_space().len() < f.len(),
        "back-pressure: the receive buffer stays full"
    );
    d.audio_cap = usize::MAX;
    for _ in 0..sent {
        s.poll(3 * MS, &mut d);
    }
    assert_eq!(d.audio.len(), sent);
}

#[test]
fn control_unavailable_is_answered() {
    let w = welcome();
    let mut d = Mock::new();
    d.control_available = false;
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(9, &Shutdown {}));
    s.poll(2 * MS, &mut d);
    assert_eq!(
        error_code(&wire.take(&mut s, 2 * MS)[0]),
        (Some(9), "control_unavailable".into())
    );
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn telemetry_follows_subscriptions_and_sheds_under_a_slow_reader() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    assert!(s.telemetry_due(2 * MS).is_empty());
    send(
        &mut s,
        &frame(
            3,
            &Subscribe {
                stream: Stream::Meters,
                rate_hz: 100,
            },
        ),
    );
    s.poll(2 * MS, &mut d);
    assert_eq!(
        wire.take(&mut s, 2 * MS)[0],
        (Some(3), ServerMessage::Ack(Ack { sample: None }))
    );
    assert!(s.telemetry_due(2 * MS).contains(Stream::Meters));
    let mut meters = Meters::default();
    for _ in 0..64 {
        meters.peak.push(0.5).unwrap();
        meters.rms.push(0.25).unwrap();
    }
    assert!(s.send_telemetry(Stream::Meters, &meters, 2 * MS));
    assert!(!s.telemetry_due(3 * MS).contains(Stream::Meters));
    assert!(s.telemetry_due(12 * MS).contains(Stream::Meters));
    // The client stops reading: telemetry is shed, answers still fit.
    let mut sent = 1;
    while s.send_telemetry(Stream::Meters, &meters, 12 * MS) {
        sent += 1;
    }
    assert!(s.telemetry_shed() >= 1);
    send(&mut s, &frame(4, &Play {}));
    s.poll(13 * MS, &mut d);
    s.answer(4, Answer::Ack { sample: Some(1) })
        .expect("room kept for answers");
    let got = wire.take(&mut s, 13 * MS);
    assert_eq!(
        got.iter()
            .filter(|m| matches!(m.1, ServerMessage::Meters(_)))
            .count(),
        sent
    );
    assert_eq!(
        got.last().unwrap(),
        &(Some(4), ServerMessage::Ack(Ack { sample: Some(1) }))
    );
}

#[test]
fn slow_consumer_is_dropped() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, _) = session_open(&w, &mut d);
    send(
        &mut s,
        &frame(
            2,
            &Ping {
                nonce: 1,
                t_client_us: None,
                rt: false,
            },
        ),
    );
    s.poll(10 * MS, &mut d);
    // Keep the client alive by pings but never take tx bytes.
    for t in (20..=300).step_by(20) {
        send(
            &mut s,
            &frame(
                t,
                &Ping {
                    nonce: 1,
                    t_client_us: None,
                    rt: false,
                },
            ),
        );
        s.poll(u64::from(t) * MS, &mut d);
    }
    assert_eq!(s.state(), SessionState::Open);
    s.poll(311 * MS, &mut d);
    assert!(s.is_closed());
}

#[test]
fn goodbye_lingers_until_in_flight_answers_are_out() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(2, &Play {}));
    send(&mut s, &frame(3, &Goodbye {}));
    s.poll(2 * MS, &mut d);
    assert_eq!(s.state(), SessionState::Closing);
    assert!(!s.is_closed(), "the ack for 2 is still owed");
    s.answer(2, Answer::Ack { sample: Some(5) }).unwrap();
    assert!(s.is_closed());
    let refs: Vec<_> = wire.take(&mut s, 3 * MS).into_iter().map(|m| m.0).collect();
    assert_eq!(refs, [Some(3), Some(2)]);
}

#[test]
fn mid_frame_eof_applies_nothing() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, _) = session_open(&w, &mut d);
    let f = frame(2, &Seek { sample: 1 });
    let g = frame(3, &Seek { sample: 2 });
    send(&mut s, &f);
    send(&mut s, &g[..g.len() - 1]);
    s.rx_eof();
    s.poll(2 * MS, &mut d);
    assert_eq!(d.audio.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
    assert_eq!(s.state(), SessionState::Closing);
    assert_eq!(d.releases, 1, "the controlling place is free at once");
    assert!(
        !s.is_closed(),
        "the answer to 2 is still owed to a peer that may only half-close"
    );
    s.answer(2, Answer::Ack { sample: Some(1) }).unwrap();
    assert!(s.is_closed());
}

/// A frame whose body is invalid but whose id is readable: answered `invalid_field`.
fn malformed(id: u32) -> Vec<u8> {
    let payload =
        format!(r#"{{"type":"command","name":"param.set","id":{id},"body":{{"node":"x"}}}}"#);
    let mut f = FrameHeader::json(payload.len() as u32).to_bytes().to_vec();
    f.extend_from_slice(payload.as_bytes());
    f
}

/// Answers by ref, counted.
fn count_refs(got: &[(Option<u32>, ServerMessage)], into: &mut BTreeMap<u32, u32>) {
    for (r, m) in got {
        if let Some(r) = r {
            *into.entry(*r).or_default() += 1;
        } else {
            assert!(
                matches!(m, ServerMessage::Goodbye(_) | ServerMessage::Transport(_)),
                "{m:?}"
            );
        }
    }
}

/// Defect 1 (issue 9), first form: EOF while a command waits for a full route. The waiting one
/// and the ones behind it in the receive buffer are still carried out and answered, in order.
/// Fails on the old code: the waiting command was dropped and the buffered ones never decoded.
#[test]
fn eof_while_blocked_still_carries_out_every_buffered_command() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 1;
    let (mut s, mut wire) = session_open(&w, &mut d);
    for id in 2..12 {
        send(&mut s, &frame(id, &Play {}));
    }
    s.poll(2 * MS, &mut d);
    assert!(s.is_blocked());
    s.rx_eof();
    let mut answered = Vec::new();
    for t in 3..40 {
        s.poll(t * MS, &mut d);
        assert!(s.rx_space().is_empty() || s.state() < SessionState::Closing);
        while let Some((id, _)) = d.audio.pop_front() {
            s.answer(id, Answer::Ack { sample: Some(1) }).unwrap();
        }
        answered.extend(wire.take(&mut s, t * MS).into_iter().map(|m| m.0.unwrap()));
        if s.is_closed() {
            break;
        }
    }
    assert!(s.is_closed());
    assert_eq!(answered, (2..12).collect::<Vec<_>>());
    assert_eq!(d.releases, 1, "released once the input is drained");
}

/// Defect 1, second form: the EOF arrives in the poll that finds the route full (capacity 0
/// for good). The flush timeout bounds the wait: then the ping is answered `shutting_down`.
/// Fails on the old code (no answer at all).
#[test]
fn eof_in_the_poll_of_a_refusal_is_answered_within_the_flush_timeout() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 0;
    let (mut s, mut wire) = session_open(&w, &mut d);
    let ping = Ping {
        nonce: 3,
        t_client_us: Some(5),
        rt: true,
    };
    send(&mut s, &frame(7, &ping));
    s.rx_eof();
    let mut got = Vec::new();
    let mut t = 2 * MS;
    while t < 2_000 * MS && !s.is_closed() {
        s.poll(t, &mut d);
        got.extend(wire.take(&mut s, t));
        t += 10 * MS;
    }
    assert!(s.is_closed());
    assert!(t <= 1_020 * MS, "bounded by the flush timeout (1 s): {t}");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(error_code(&got[0]), (Some(7), "shutting_down".into()));
    assert!(d.audio.is_empty(), "not carried out");
}

/// Fixture: an open session with the smallest transmit buffer and the given flush timeout,
/// that received 40 malformed commands (ids 100..140, each answered `invalid_field`) and the
/// end of input in one read; the welcome is already read, nothing else.
fn half_closed_behind_a_slow_reader(w: &Welcome, d: &mut Mock, flush: Nanos) -> (Sess, Wire) {
    let mut s = Session::new(
        &config(w, None),
        vec![0u8; HEADER_LEN + MAX_FRAME as usize],
        vec![0u8; ANSWER_ROOM + TELEMETRY_RESERVE],
        0,
    )
    .unwrap();
    s.set_flush_timeout(flush);
    let mut wire = Wire::new();
    send(&mut s, &PREFACE);
    send(&mut s, &frame(1, &hello(None)));
    s.poll(0, d);
    wire.take(&mut s, 0);
    let mut all = Vec::new();
    for id in 100..140 {
        all.extend(malformed(id));
    }
    send(&mut s, &all);
    s.rx_eof();
    (s, wire)
}

/// Defect 1, third form: a slow reader. 40 malformed commands and the EOF in one read; the
/// first error answers leave less than `ANSWER_ROOM` free. The session waits for the client to
/// read instead of closing; all 40 get their error. Fails on the old code (the last ones lost).
#[test]
fn eof_behind_a_slow_reader_still_answers_every_command() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = half_closed_behind_a_slow_reader(&w, &mut d, DEFAULT_FLUSH_TIMEOUT);
    let mut refs = BTreeMap::new();
    for t in 1..50 {
        s.poll(t * MS, &mut d);
        // The client reads only every other poll.
        if t % 2 == 0 {
            count_refs(&wire.take(&mut s, t * MS), &mut refs);
        }
        if s.is_closed() {
            break;
        }
    }
    assert!(s.is_closed());
    count_refs(&wire.take(&mut s, 60 * MS), &mut refs);
    assert_eq!(
        refs.keys().copied().collect::<Vec<_>>(),
        (100..140).collect::<Vec<_>>()
    );
    assert!(refs.values().all(|&n| n == 1), "{refs:?}");
}

/// Defect 1, shutdown form: frames received but not yet polled when the server stops are each
/// answered `shutting_down` (not carried out), then `goodbye` comes last. Fails on the old code
/// (the session was closed at once, the frames dropped).
#[test]
fn shutdown_answers_buffered_frames_shutting_down_then_goodbye_last() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    for id in 20..25 {
        send(&mut s, &frame(id, &Stop {}));
    }
    s.shutdown(2 * MS);
    assert!(s.rx_space().is_empty(), "nothing more is read");
    s.poll(2 * MS, &mut d);
    assert!(s.is_closed());
    let got = wire.take(&mut s, 3 * MS);
    assert_eq!(got.len(), 6, "{got:?}");
    for (i, m) in got[..5].iter().enumerate() {
        assert_eq!(error_code(m), (Some(20 + i as u32), "shutting_down".into()));
    }
    assert!(matches!(got[5].1, ServerMessage::Goodbye(_)), "{got:?}");
    assert!(d.audio.is_empty());
}

/// Defect 4 (issue 9): nothing follows the shutdown `goodbye`. Owed answers are awaited (up
/// to half the flush timeout) and precede it; the command waiting for a full route is answered
/// `shutting_down` and never routed, even when the route frees; `is_closed` never flips back.
/// Fails on the old code (the waiting command was routed after `goodbye`, and its ack followed).
#[test]
fn nothing_follows_the_shutdown_goodbye_and_nothing_is_routed_after_it() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 1;
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(76, &Play {}));
    send(&mut s, &frame(77, &Stop {}));
    s.poll(2 * MS, &mut d);
    assert!(s.is_blocked());
    s.shutdown(3 * MS);
    s.poll(3 * MS, &mut d);
    assert!(!s.is_closed(), "the answer to 76 is owed");
    d.audio_cap = 8; // the route frees
    s.poll(4 * MS, &mut d);
    assert_eq!(d.audio.len(), 1, "77 is never routed");
    s.answer(76, Answer::Ack { sample: Some(1) }).unwrap();
    assert!(s.is_closed(), "goodbye once nothing is owed");
    for t in 5..10 {
        s.poll(t * MS, &mut d);
        assert!(s.is_closed(), "never flips back");
    }
    let got = wire.take(&mut s, 10 * MS);
    let refs: Vec<_> = got.iter().map(|m| m.0).collect();
    assert_eq!(refs, [Some(77), Some(76), None], "{got:?}");
    assert_eq!(error_code(&got[0]), (Some(77), "shutting_down".into()));
    assert!(matches!(got[2].1, ServerMessage::Goodbye(_)));
    assert_eq!(d.audio.len(), 1);
}

/// Defect 4: past half the flush timeout the goodbye goes anyway; an answer arriving later is
/// discarded (counted), never sent after it.
#[test]
fn a_late_answer_after_the_shutdown_goodbye_is_discarded() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(5, &Play {}));
    s.poll(2 * MS, &mut d);
    s.shutdown(3 * MS);
    s.poll(100 * MS, &mut d);
    assert!(!s.is_closed());
    s.poll(503 * MS, &mut d);
    assert!(s.is_closed(), "half the default flush timeout passed");
    s.answer(5, Answer::Ack { sample: Some(1) }).unwrap();
    assert_eq!(s.answers_discarded(), 1);
    let got = wire.take(&mut s, 600 * MS);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(got[0].1, ServerMessage::Goodbye(_)));
}

/// Defect 4, slow-consumer form: in the poll where the slow-consumer goodbye closes the
/// session, the waiting command is not routed. Fails on the old code.
#[test]
fn no_routing_in_the_poll_of_a_slow_consumer_goodbye() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 0;
    let (mut s, _wire) = session_open(&w, &mut d);
    // Something for the client to (not) read, then a command that waits.
    send(&mut s, &frame(3, &Tempo { bpm: 1.0 }));
    send(&mut s, &frame(2, &Play {}));
    s.poll(2 * MS, &mut d);
    assert!(s.is_blocked());
    d.audio_cap = 8;
    s.poll(400 * MS, &mut d); // beyond slow_consumer_timeout (300 ms): goodbye
    assert!(s.is_closed());
    assert!(d.audio.is_empty(), "routed after closing");
}

/// Defect 9 (issue 9): a preface and `hello` received before the handshake deadline but polled
/// after it are still answered (`welcome`), not closed silently. Fails on the old code.
#[test]
fn bytes_received_before_the_handshake_deadline_are_read_first() {
    let w = welcome();
    let mut d = Mock::new();
    let mut s = new_session(&w, None);
    let mut wire = Wire::new();
    send(&mut s, &PREFACE);
    send(&mut s, &frame(1, &hello(None)));
    s.poll(150 * MS, &mut d); // handshake_timeout is 100 ms
    assert_eq!(s.state(), SessionState::Open);
    let got = wire.take(&mut s, 150 * MS);
    assert!(
        matches!(got[0], (Some(1), ServerMessage::Welcome(_))),
        "{got:?}"
    );
    // Negative control: only the preface arrived: the timeout error is sent (not silence).
    let mut s = new_session(&w, None);
    let mut wire = Wire::new();
    send(&mut s, &PREFACE);
    s.poll(150 * MS, &mut d);
    let got = wire.take(&mut s, 150 * MS);
    assert_eq!(error_code(&got[0]), (None, "handshake_timeout".into()));
    assert!(s.is_closed());
}

/// Defect 5 (issue 9): an error to another command with the same id leaves the ping's
/// `t_client_us` alone. Fails on the old code (the error consumed it).
#[test]
fn an_error_with_a_reused_id_leaves_the_ping_timestamp_alone() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    let set = ParamSet {
        node: 1,
        param: 0,
        value: 0.5,
        ramp_ms: None,
    };
    send(&mut s, &frame(5, &set));
    let ping = Ping {
        nonce: 7,
        t_client_us: Some(111),
        rt: true,
    };
    send(&mut s, &frame(5, &ping));
    s.poll(2 * MS, &mut d);
    let rejected = Answer::Error {
        code: ErrorCode::UnknownNode,
        detail: "no node",
    };
    s.answer(5, rejected).unwrap();
    let pong = Answer::Pong {
        nonce: 7,
        t_client_us: None,
        sample: Some(2),
    };
    s.answer(5, pong).unwrap();
    let got = wire.take(&mut s, 3 * MS);
    assert!(
        matches!(
            got[1].1,
            ServerMessage::Pong(Pong {
                t_client_us: Some(111),
                ..
            })
        ),
        "{got:?}"
    );
}

#[test]
fn goodbye_then_half_close_still_delivers_owed_answers() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(5, &Play {}));
    send(&mut s, &frame(6, &Goodbye {}));
    s.rx_eof();
    s.poll(2 * MS, &mut d);
    assert!(!s.is_closed());
    s.answer(5, Answer::Ack { sample: Some(9) }).unwrap();
    assert!(s.is_closed());
    let refs: Vec<_> = wire.take(&mut s, 3 * MS).into_iter().map(|m| m.0).collect();
    assert_eq!(refs, [Some(6), Some(5)]);
}

#[test]
fn an_ack_with_a_reused_id_leaves_the_ping_timestamp_alone() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(
        &mut s,
        &frame(
            5,
            &ParamSet {
                node: 1,
                param: 0,
                value: 0.5,
                ramp_ms: None,
            },
        ),
    );
    send(
        &mut s,
        &frame(
            5,
            &Ping {
                nonce: 7,
                t_client_us: Some(1234),
                rt: true,
            },
        ),
    );
    s.poll(2 * MS, &mut d);
    s.answer(5, Answer::Ack { sample: Some(1) }).unwrap();
    s.answer(
        5,
        Answer::Pong {
            nonce: 7,
            t_client_us: None,
            sample: Some(2),
        },
    )
    .unwrap();
    let got = wire.take(&mut s, 3 * MS);
    assert!(
        matches!(
            got[1].1,
            ServerMessage::Pong(Pong {
                t_client_us: Some(1234),
                ..
            })
        ),
        "{got:?}"
    );
}

/// A small deterministic generator (xorshift), so the simulation needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Seeded simulation: random commands, random read/write splits, delays, queue stalls and
/// half-closes. Every command is answered exactly once; after a half-close, every frame that
/// was completely received before it (completeness, not only "no duplicates": this fails on the
/// code before issue 9, which dropped the waiting command and the frames behind it).
#[test]
fn simulation_every_accepted_command_is_answered_once() {
    let w = welcome();
    let mut resets = 0;
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut d = Mock::new();
        d.audio_cap = 1 + rng.below(8) as usize;
        let (mut s, mut wire) = session_open(&w, &mut d);
        let mut to_send: Vec<u8> = Vec::new();
        let mut sent_ids = Vec::new();
        let mut answers: BTreeMap<u32, u32> = BTreeMap::new();
        let mut now = 2 * MS;
        let mut reset = false;
        // Where each frame ends in the byte stream, and how many bytes the session received.
        let mut frame_ends: Vec<(u32, usize)> = Vec::new();
        let mut queued = 0usize;
        let mut received = 0usize;
        for id in 1000..1400u32 {
            if rng.below(400) == 0 {
                reset = true;
                break;
            }
            let f = match rng.below(5) {
                0 => frame(id, &Play {}),
                1 => frame(
                    id,
                    &ParamSet {
                        node: 1,
                        param: 2,
                        value: 0.5,
                        ramp_ms: None,
                    },
                ),
                2 => frame(
                    id,
                    &Ping {
                        nonce: id,
                        t_client_us: Some(1),
                        rt: rng.below(2) == 0,
                    },
                ),
                3 => frame(id, &RemoveNode { node: id }),
                _ => frame(id, &Tempo { bpm: 1.0 }), // out of range: answered by the session
            };
            to_send.extend_from_slice(&f);
            sent_ids.push(id);
            queued += f.len();
            frame_ends.push((id, queued));
            // Deliver a random prefix of what is queued, in random pieces.
            let n = rng.below(to_send.len() as u64 + 1) as usize;
            let mut delivered = 0;
            while delivered < n {
                let space = s.rx_space();
                let k = space
                    .len()
                    .min(n - delivered)
                    .min(1 + rng.below(64) as usize);
                if k == 0 {
                    break;
                }
                space[..k].copy_from_slice(&to_send[delivered..delivered + k]);
                s.rx_commit(k);
                delivered += k;
            }
            to_send.drain(..delivered);
            received += delivered;
            now += rng.below(3) * MS;
            // The ping keeps the session alive; the test only checks answers.
            s.poll(now, &mut d);
            // The "audio thread" takes some, the control thread too.
            for _ in 0..rng.below(3) {
                if let Some((cid, _)) = d.audio.pop_front() {
                    s.answer(cid, Answer::Ack { sample: Some(1) }).unwrap();
                }
            }
            if let Some((cid, _)) = d.control.pop_front() {
                s.answer(cid, Answer::Ack { sample: None }).unwrap();
            }
            // Partial writes of tx.
            let pending = s.tx_pending().len();
            if pending > 0 && rng.below(2) == 0 {
                let k = 1 + rng.below(pending as u64) as usize;
                let bytes = s.tx_pending()[..k].to_vec();
                s.tx_consumed(k, now);
                wire.dec.push(&bytes);
                while let Some(f) = wire.dec.next_frame() {
                    let (r, _) = ServerMessage::decode(f.unwrap().payload).unwrap();
                    *answers.entry(r.expect("answers carry ref")).or_default() += 1;
                }
            }
        }
        if reset {
            // The client half-closes mid-stream: complete frames still apply and are answered,
            // the partial one is dropped; nothing is answered twice.
            s.rx_eof();
            for _ in 0..1000 {
                now += MS / 10;
                s.poll(now, &mut d);
                while let Some((cid, _)) = d.audio.pop_front() {
                    s.answer(cid, Answer::Ack { sample: Some(1) }).unwrap();
                }
                while let Some((cid, _)) = d.control.pop_front() {
                    s.answer(cid, Answer::Ack { sample: None }).unwrap();
                }
                for (r, _) in wire.take(&mut s, now) {
                    *answers.entry(r.unwrap()).or_default() += 1;
                }
                if s.is_closed() {
                    break;
                }
            }
            assert!(
                s.is_closed(),
                "seed {seed}: {:?} blocked {} in_flight {} eof {}",
                s.state(),
                s.is_blocked(),
                s.in_flight(),
                s.is_eof()
            );
            assert!(
                answers.values().all(|&n| n == 1),
                "seed {seed}: {answers:?}"
            );
            let complete: Vec<u32> = frame_ends
                .iter()
                .filter(|(_, end)| *end <= received)
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                answers.keys().copied().collect::<Vec<_>>(),
                complete,
                "seed {seed}: every complete frame sent before the half-close is answered"
            );
            resets += 1;
            continue;
        }
        // Drain everything.
        let mut left = to_send.as_slice();
        for round in 0..10_000 {
            let space = s.rx_space();
            let k = space.len().min(left.len());
            space[..k].copy_from_slice(&left[..k]);
            s.rx_commit(k);
            left = &left[k..];
            now += MS / 10;
            s.poll(now, &mut d);
            while let Some((cid, _)) = d.audio.pop_front() {
                s.answer(cid, Answer::Ack { sample: Some(1) }).unwrap();
            }
            while let Some((cid, _)) = d.control.pop_front() {
                s.answer(cid, Answer::Ack { sample: None }).unwrap();
            }
            for (r, _) in wire.take(&mut s, now) {
                *answers.entry(r.unwrap()).or_default() += 1;
            }
            if left.is_empty()
                && s.in_flight() == 0
                && !s.is_blocked()
                && answers.len() == sent_ids.len()
            {
                break;
            }
            assert!(round < 9_999, "seed {seed}: stuck");
        }
        assert_eq!(
            answers.keys().copied().collect::<Vec<_>>(),
            sent_ids,
            "seed {seed}"
        );
        assert!(
            answers.values().all(|&n| n == 1),
            "seed {seed}: {answers:?}"
        );
    }
    assert!(resets >= 20, "the seeds exercise the half-close: {resets}");
}

#[test]
fn a_client_blocked_by_back_pressure_is_not_timed_out() {
    let w = welcome();
    let mut d = Mock::new();
    d.audio_cap = 0;
    let (mut s, _) = session_open(&w, &mut d);
    send(&mut s, &frame(2, &Play {}));
    s.poll(2 * MS, &mut d);
    assert!(s.is_blocked());
    // Blocked far longer than the heartbeat timeout, with or without bytes from the client.
    for t in (50..=1000).step_by(50) {
        s.poll(t * MS, &mut d);
        assert_eq!(s.state(), SessionState::Open, "at {t} ms");
    }
    // Unblocked: the clock restarts, and then silence is the client's (negative control).
    d.audio_cap = 8;
    s.poll(1001 * MS, &mut d);
    assert!(!s.is_blocked());
    s.poll(1200 * MS, &mut d);
    assert_eq!(s.state(), SessionState::Open);
    s.poll(1201 * MS, &mut d);
    assert!(s.is_closed());
}

/// Found by the session model (fuzz/fuzz_targets/session_model.rs): a shutdown before the
/// preface was polled. The preface and `hello` already received are answered: the engine's
/// preface first, then `shutting_down` (never an error before the preface, never silence).
#[test]
fn shutdown_before_the_preface_was_polled_still_answers_hello_after_the_preface() {
    let w = welcome();
    let mut d = Mock::new();
    let mut s = new_session(&w, None);
    send(&mut s, &PREFACE);
    send(&mut s, &frame(1, &hello(None)));
    s.shutdown(MS);
    s.poll(MS, &mut d);
    assert!(s.is_closed());
    let mut wire = Wire::new(); // its decoder checks the engine's preface first
    let got = wire.take(&mut s, 2 * MS);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(error_code(&got[0]), (Some(1), "shutting_down".into()));
    assert_eq!(d.claims, 0, "no session was opened");
}

/// Review (issue 9, after the hardening): a half-closed client that reads slowly must not make
/// the driver spin. Past the drain deadline (or the heartbeat deadline, which does not apply
/// after EOF), with frames still waiting behind a full transmit buffer, nothing changes until
/// the client reads (a writable event) or the slow-consumer limit: `poll_at` must not name a
/// time already past, or the network thread polls with timeout 0 until then. Fails before the
/// fix (`poll_at` returned the passed drain deadline, then the passed heartbeat deadline).
#[test]
fn a_slow_reader_after_eof_does_not_make_poll_at_spin() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = half_closed_behind_a_slow_reader(&w, &mut d, 50 * MS);
    s.poll(MS, &mut d);
    assert!(!s.is_closed(), "blocked behind the unread answers");
    // 60 ms: past the drain deadline (1 + 50 ms). 250 ms: past the heartbeat deadline too
    // (200 ms after the last byte). The slow-consumer limit (300 ms after the first unread
    // answer) has not passed.
    for now in [60 * MS, 250 * MS] {
        s.poll(now, &mut d);
        assert!(!s.is_closed());
        let at = s.poll_at();
        assert!(
            at.is_none_or(|t| t > now),
            "poll_at {at:?} is not after now {now}: the driver would spin"
        );
    }
    // Negative control: once the client reads, the session goes on and everything is answered.
    let mut refs = BTreeMap::new();
    for t in 251..400 {
        s.poll(t * MS, &mut d);
        count_refs(&wire.take(&mut s, t * MS), &mut refs);
        if s.is_closed() {
            break;
        }
    }
    assert!(s.is_closed());
    assert_eq!(refs.len(), 40, "{refs:?}");
    assert!(refs.values().all(|&n| n == 1), "{refs:?}");
}

/// Review (issue 9, after the hardening): while the server stops, telemetry is no longer due
/// (`telemetry_due` is empty), so a subscription's next time stays in the past; `poll_at` must
/// not name it, or the network thread polls with timeout 0 for the whole wait for owed answers
/// (half the flush time). Fails before the fix (`poll_at` returned the passed `next`).
#[test]
fn a_subscription_does_not_make_poll_at_spin_while_stopping() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(
        &mut s,
        &frame(
            2,
            &Subscribe {
                stream: Stream::Transport,
                rate_hz: 100,
            },
        ),
    );
    send(&mut s, &frame(3, &Play {}));
    s.poll(2 * MS, &mut d);
    assert_eq!(s.in_flight(), 1);
    wire.take(&mut s, 2 * MS);
    s.shutdown(3 * MS);
    for now in [3 * MS, 40 * MS, 200 * MS] {
        s.poll(now, &mut d);
        assert!(!s.is_closed(), "the answer to 3 is owed");
        assert!(
            s.telemetry_due(now).is_empty(),
            "no telemetry while stopping"
        );
        let at = s.poll_at();
        assert!(
            at.is_none_or(|t| t > now),
            "poll_at {at:?} is not after now {now}: the driver would spin"
        );
    }
    // Negative control: the answer arrives, the goodbye follows it.
    s.answer(3, Answer::Ack { sample: Some(1) }).unwrap();
    assert!(s.is_closed());
    let got = wire.take(&mut s, 201 * MS);
    let refs: Vec<_> = got.iter().map(|m| m.0).collect();
    assert_eq!(refs, [Some(3), None], "{got:?}");
}

/// Review (issue 9, after the hardening): errors.md §1 says after a fatal error "the engine
/// sends the error frame, sends nothing after it". A command in flight when a fatal
/// `frame_too_large` closes the session must not have its answer appended after the error: it
/// is discarded like one arriving after `goodbye`. Fails before the fix (the ack followed the
/// fatal error).
#[test]
fn nothing_follows_a_fatal_error_not_even_an_owed_answer() {
    let w = welcome();
    let mut d = Mock::new();
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(5, &Play {}));
    send(&mut s, &FrameHeader::json(MAX_FRAME + 1).to_bytes());
    s.poll(2 * MS, &mut d);
    assert!(s.is_closed());
    assert_eq!(d.audio.len(), 1, "5 was handed over before the fatal frame");
    s.answer(5, Answer::Ack { sample: Some(1) }).unwrap();
    assert_eq!(s.answers_discarded(), 1);
    assert_eq!(s.in_flight(), 0);
    let got = wire.take(&mut s, 3 * MS);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(error_code(&got[0]), (None, "frame_too_large".into()));
    // Negative control: a client `goodbye` is not fatal; the owed answer still follows it.
    let (mut s, mut wire) = session_open(&w, &mut d);
    send(&mut s, &frame(6, &Play {}));
    send(&mut s, &frame(7, &Goodbye {}));
    s.poll(2 * MS, &mut d);
    s.answer(6, Answer::Ack { sample: Some(1) }).unwrap();
    let refs: Vec<_> = wire.take(&mut s, 3 * MS).iter().map(|m| m.0).collect();
    assert_eq!(refs, [Some(7), Some(6)]);
}

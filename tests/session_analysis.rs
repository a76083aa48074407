//! Issue 14 in the session: attachment negotiation, analysis subscriptions (keys, limits, ranges,
//! replace, unsubscribe), their schedule, both encodings, and the shedding order under a slow
//! reader (analysis before meters, never an answer). Deterministic: no sockets, time by hand.

mod common;

use std::collections::VecDeque;

use loophole_ipc::frame::{FrameDecoder, HEADER_LEN, PREFACE};
use loophole_ipc::message::*;
use loophole_ipc::session::*;

const MS: Nanos = 1_000_000;
const MAX_FRAME: u32 = 4096;

fn welcome() -> Welcome {
    Welcome {
        // Overwritten by the session: a test below checks that these never leak through.
        attachments: true,
        taps: 99,
        ..common::test_welcome()
    }
}

#[derive(Default)]
struct Mock {
    audio: VecDeque<u32>,
}

impl Driver for Mock {
    fn claim(&mut self) -> bool {
        true
    }
    fn release(&mut self) {}
    fn route_audio(&mut self, id: u32, _: &Command) -> Result<(), RouteFull> {
        self.audio.push_back(id);
        Ok(())
    }
    fn route_control(&mut self, _: u32, _: &Command) -> Result<(), RouteError> {
        Err(RouteError::Unavailable)
    }
    fn snapshot(&mut self) -> (TransportState, Health) {
        (TransportState::default(), Health::default())
    }
}

type Sess = Session<Vec<u8>, Vec<u8>>;

/// What the client received: message, ref, values (analysis), and whether it had the flag.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    reference: Option<u32>,
    message: ServerMessage,
    values: Vec<f32>,
    attachment: bool,
}

struct Wire {
    dec: FrameDecoder<Vec<u8>>,
}

impl Wire {
    fn new(accept_attachments: bool) -> Self {
        let mut dec = FrameDecoder::new(vec![0u8; 70_000], 65_536).unwrap();
        dec.set_accept_attachments(accept_attachments);
        Self { dec }
    }

    fn take(&mut self, s: &mut Sess, now: Nanos) -> Vec<Got> {
        let out = s.tx_pending().to_vec();
        s.tx_consumed(out.len(), now);
        assert_eq!(self.dec.push(&out), out.len());
        let mut got = Vec::new();
        while let Some(f) = self.dec.next_frame() {
            let f = f.unwrap();
            let inc = ServerMessage::decode_frame(&f).unwrap();
            let mut values = Vec::new();
            if let (ServerMessage::Analysis(m), Some(v)) = (&inc.message, &inc.values) {
                values = vec![0.0; m.value_count()];
                m.read_values(v, &mut values).unwrap();
            }
            got.push(Got {
                reference: inc.reference,
                message: inc.message,
                values,
                attachment: f.attachment.is_some(),
            });
        }
        got
    }
}

fn frame<M: Message>(id: u32, m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let n = encode_frame(Some(id), m, &mut buf, u32::MAX).unwrap();
    buf.truncate(n);
    buf
}

fn send(s: &mut Sess, bytes: &[u8]) {
    let space = s.rx_space();
    space[..bytes.len()].copy_from_slice(bytes);
    s.rx_commit(bytes.len());
}

struct Setup {
    taps: u16,
    engine_allows: bool,
    client_asks: bool,
    tx: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            taps: 2,
            engine_allows: true,
            client_asks: true,
            tx: 256 * 1024,
        }
    }
}

/// An open session (welcome and snapshot read) and the welcome the client saw.
fn open(setup: &Setup, d: &mut Mock) -> (Sess, Wire, Welcome) {
    let w = welcome();
    let cfg = SessionConfig {
        max_frame: MAX_FRAME,
        handshake_timeout: 100 * MS,
        heartbeat_interval: 50 * MS,
        heartbeat_timeout: 10_000 * MS,
        slow_consumer_timeout: 10_000 * MS,
        token: None,
        welcome: &w,
        taps: setup.taps,
        attachments: setup.engine_allows,
    };
    let mut s = Session::new(
        &cfg,
        vec![0u8; HEADER_LEN + MAX_FRAME as usize],
        vec![0u8; setup.tx],
        0,
    )
    .unwrap();
    let mut wire = Wire::new(setup.client_asks);
    send(&mut s, &PREFACE);
    let hello = Hello {
        protocol: 1,
        client: "test".try_into().unwrap(),
        token: None,
        attachments: setup.client_asks,
    };
    send(&mut s, &frame(1, &hello));
    s.poll(MS, d);
    assert_eq!(s.state(), SessionState::Open);
    let got = wire.take(&mut s, MS);
    let ServerMessage::Welcome(welcome) = &got[0].message else {
        panic!("{got:?}")
    };
    (s, wire, welcome.clone())
}

fn subscribe(s: &mut Sess, d: &mut Mock, wire: &mut Wire, id: u32, sub: SubscribeAnalysis) -> Got {
    send(s, &frame(id, &sub));
    s.poll(2 * MS, d);
    let got = wire.take(s, 2 * MS);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].reference, Some(id));
    got[0].clone()
}

fn is_ack(g: &Got) -> bool {
    matches!(g.message, ServerMessage::Ack(Ack { sample: None }))
}

fn code(g: &Got) -> String {
    match &g.message {
        ServerMessage::Error(e) => e.code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn scope(tap: u16, points: u16, rate_hz: u16) -> SubscribeAnalysis {
    SubscribeAnalysis {
        stream: AnalysisStream::Scope,
        tap,
        size: points,
        rate_hz,
    }
}

fn spectrum(tap: u16, bins: u16, rate_hz: u16) -> SubscribeAnalysis {
    SubscribeAnalysis {
        stream: AnalysisStream::Spectrum,
        tap,
        size: bins,
        rate_hz,
    }
}

fn sub_of(s: SubscribeAnalysis) -> AnalysisKey {
    AnalysisKey {
        stream: s.stream,
        tap: s.tap,
        size: s.size,
    }
}

fn data(values: &[f32]) -> AnalysisData<'_> {
    AnalysisData {
        sample: 4096,
        missed: 7,
        samples_per_point: 4,
        sample_rate: 48_000,
        values,
    }
}

#[test]
fn attachments_are_used_only_when_the_client_asks_and_the_engine_allows() {
    let values: Vec<f32> = (0..32).map(|i| i as f32 / 32.0 - 0.5).collect();
    let mut forms = Vec::new();
    for (engine_allows, client_asks) in [(true, true), (true, false), (false, true), (false, false)]
    {
        let mut d = Mock::default();
        let setup = Setup {
            engine_allows,
            client_asks,
            ..Setup::default()
        };
        let (mut s, mut wire, w) = open(&setup, &mut d);
        let both = engine_allows && client_asks;
        assert_eq!(
            w.attachments, both,
            "welcome.attachments {engine_allows} {client_asks}"
        );
        assert_eq!(s.attachments(), both);
        assert_eq!(w.taps, 2, "welcome.taps comes from the config");
        assert!(is_ack(&subscribe(
            &mut s,
            &mut d,
            &mut wire,
            2,
            scope(1, 16, 30)
        )));
        s.send_analysis(sub_of(scope(1, 16, 30)), &data(&values), 3 * MS)
            .unwrap();
        let got = wire.take(&mut s, 3 * MS);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].attachment, both,
            "frame form {engine_allows} {client_asks}"
        );
        let ServerMessage::Analysis(m) = got[0].message else {
            panic!("{got:?}")
        };
        assert_eq!(
            (m.tap, m.size, m.samples_per_point, m.sample, m.missed),
            (1, 16, 4, 4096, 7)
        );
        assert_eq!(got[0].values, values, "same values in either form");
        forms.push(got[0].attachment);
    }
    // Negative control: the forms really differ across the matrix.
    assert_eq!(forms, [true, false, false, false]);
}

#[test]
fn a_client_that_did_not_ask_refuses_an_attachment_frame() {
    // The client side of the negotiation: a decoder that did not opt in calls the flag a bad
    // header, like the engine does for every client frame.
    let mut d = Mock::default();
    let (mut s, mut wire, _) = open(&Setup::default(), &mut d);
    assert!(is_ack(&subscribe(
        &mut s,
        &mut d,
        &mut wire,
        2,
        spectrum(0, 16, 30)
    )));
    s.send_analysis(sub_of(spectrum(0, 16, 30)), &data(&[-90.0; 16]), 3 * MS)
        .unwrap();
    let bytes = s.tx_pending().to_vec();
    let mut strict = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    strict.push(&bytes);
    let e = strict.next_frame().unwrap().unwrap_err();
    assert_eq!(e.code(), loophole_ipc::ErrorCode::BadHeader);
    // Control: the same bytes decode once attachments are accepted.
    let mut lenient = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    lenient.set_accept_attachments(true);
    lenient.push(&bytes);
    assert!(lenient.next_frame().unwrap().unwrap().attachment.is_some());
}

#[test]
fn subscribe_checks_tap_points_bins_and_rate() {
    let mut d = Mock::default();
    let (mut s, mut wire, _) = open(&Setup::default(), &mut d);
    let mut id = 10;
    let mut ask = |s: &mut Sess, sub| {
        id += 1;
        subscribe(s, &mut d, &mut wire, id, sub)
    };
    for (sub, why) in [
        (scope(2, 256, 30), "tap = taps"),
        (scope(0, 8, 30), "points < 16"),
        (scope(0, 1025, 30), "points > 1024"),
        (spectrum(0, 1000, 30), "bins not 2^k"),
        (spectrum(0, 8192, 30), "bins > 4096"),
        (spectrum(0, 1024, 61), "rate > 60"),
        (spectrum(0, 1024, 0), "rate 0"),
    ] {
        assert_eq!(code(&ask(&mut s, sub)), "out_of_range", "{why}");
    }
    assert_eq!(
        s.analysis_subs().count(),
        0,
        "a refused subscription changes nothing"
    );
    // Controls: the edges themselves are accepted.
    assert!(is_ack(&ask(&mut s, scope(1, 16, 60))));
    assert!(is_ack(&ask(&mut s, scope(0, 1024, 1))));
    assert!(is_ack(&ask(&mut s, spectrum(1, 4096, 60))));
    assert!(is_ack(&ask(&mut s, spectrum(0, 16, 1))));
    assert_eq!(s.analysis_subs().count(), 4);
}

#[test]
fn an_engine_without_taps_refuses_every_analysis_subscription() {
    let mut d = Mock::default();
    let setup = Setup {
        taps: 0,
        ..Setup::default()
    };
    let (mut s, mut wire, w) = open(&setup, &mut d);
    assert_eq!(w.taps, 0);
    assert_eq!(
        code(&subscribe(&mut s, &mut d, &mut wire, 2, scope(0, 256, 30))),
        "out_of_range"
    );
}

#[test]
fn eight_keys_at_most_replacing_a_key_always_works_and_unsubscribe_is_idempotent() {
    let mut d = Mock::default();
    let setup = Setup {
        taps: 16,
        ..Setup::default()
    };
    let (mut s, mut wire, _) = open(&setup, &mut d);
    for tap in 0..8 {
        assert!(is_ack(&subscribe(
            &mut s,
            &mut d,
            &mut wire,
            10 + u32::from(tap),
            scope(tap, 256, 30)
        )));
    }
    assert_eq!(s.analysis_subs().count(), MAX_ANALYSIS_SUBS);
    let ninth = subscribe(&mut s, &mut d, &mut wire, 30, spectrum(0, 1024, 30));
    assert_eq!(code(&ninth), "too_many_subscriptions");
    assert_eq!(s.analysis_subs().count(), 8);
    // Same key (scope, tap 3): replaced, not added.
    assert!(is_ack(&subscribe(
        &mut s,
        &mut d,
        &mut wire,
        31,
        scope(3, 64, 10)
    )));
    let subs: Vec<_> = s.analysis_subs().collect();
    assert_eq!(subs.len(), 8);
    let tap3: Vec<_> = subs.iter().filter(|x| x.key.tap == 3).collect();
    assert_eq!(tap3.len(), 1);
    assert_eq!((tap3[0].key.size, tap3[0].rate_hz), (64, 10));
    // The old size is gone: a frame computed for it is refused, the new one is sent.
    let old = AnalysisKey {
        size: 256,
        ..tap3[0].key
    };
    assert_eq!(
        s.send_analysis(old, &data(&[0.0; 512]), 3 * MS),
        Err(AnalysisSendError::NotSubscribed)
    );
    assert_eq!(
        s.send_analysis(tap3[0].key, &data(&[0.0; 128]), 3 * MS),
        Ok(())
    );
    wire.take(&mut s, 3 * MS);
    // Unsubscribing what is not subscribed: still ack.
    let unsub = |s: &mut Sess, d: &mut Mock, wire: &mut Wire, id, stream, tap| {
        send(s, &frame(id, &UnsubscribeAnalysis { stream, tap }));
        s.poll(4 * MS, d);
        let got = wire.take(s, 4 * MS);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reference, Some(id));
        assert!(is_ack(&got[0]), "{got:?}");
    };
    unsub(
        &mut s,
        &mut d,
        &mut wire,
        40,
        AnalysisStream::Spectrum,
        None,
    );
    unsub(
        &mut s,
        &mut d,
        &mut wire,
        41,
        AnalysisStream::Scope,
        Some(15),
    );
    assert_eq!(s.analysis_subs().count(), 8);
    unsub(
        &mut s,
        &mut d,
        &mut wire,
        42,
        AnalysisStream::Scope,
        Some(3),
    );
    assert_eq!(s.analysis_subs().count(), 7);
    assert!(s.analysis_subs().all(|x| x.key.tap != 3));
    // Now there is room for the spectrum.
    assert!(is_ack(&subscribe(
        &mut s,
        &mut d,
        &mut wire,
        43,
        spectrum(0, 1024, 30)
    )));
    // Without a tap: every tap of the stream goes, the other stream stays.
    unsub(&mut s, &mut d, &mut wire, 44, AnalysisStream::Scope, None);
    let left: Vec<_> = s.analysis_subs().collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.stream, AnalysisStream::Spectrum);
}

#[test]
fn analysis_is_due_at_its_rate_and_poll_at_wakes_for_it() {
    let mut d = Mock::default();
    let (mut s, mut wire, _) = open(&Setup::default(), &mut d);
    assert_eq!(s.analysis_due(2 * MS).count(), 0);
    assert!(is_ack(&subscribe(
        &mut s,
        &mut d,
        &mut wire,
        2,
        spectrum(1, 64, 25)
    )));
    let sub = sub_of(spectrum(1, 64, 25));
    assert_eq!(s.analysis_due(2 * MS).collect::<Vec<_>>(), [sub]);
    s.send_analysis(sub, &data(&[-100.0; 64]), 2 * MS).unwrap();
    assert_eq!(s.analysis_due(3 * MS).count(), 0, "not again right away");
    // 25 Hz: the next one 40 ms later, and the session asks to be polled then.
    assert_eq!(s.analysis_due(41 * MS).count(), 0);
    assert_eq!(s.analysis_due(42 * MS).count(), 1);
    let at = s.poll_at().unwrap();
    assert!(at <= 42 * MS, "poll_at {at} after the due analysis frame");
    // Over one simulated second at 25 Hz, sending whenever due: 25 frames (R ± 20 %).
    let mut frames = 0;
    let mut now = 42 * MS;
    while now < 42 * MS + 1_000 * MS {
        if s.analysis_due(now).count() == 1 {
            s.send_analysis(sub, &data(&[-100.0; 64]), now).unwrap();
            frames += 1;
        }
        wire.take(&mut s, now);
        now += MS;
    }
    assert!((20..=30).contains(&frames), "{frames} frames at 25 Hz");
    // Nothing new to send: skipping the period moves the schedule (and poll_at) on.
    let due_at = s.poll_at().unwrap();
    let next = s.analysis_due(now + 100 * MS).next().unwrap();
    assert!(s.skip_analysis(next, now + 100 * MS));
    assert_eq!(s.analysis_due(now + 100 * MS).count(), 0);
    assert!(s.poll_at().unwrap() > due_at.max(now + 100 * MS));
    assert!(
        !s.skip_analysis(AnalysisKey { tap: 0, ..next }, now),
        "not subscribed"
    );
    // Wrong length: refused, not sent, not counted as shed.
    assert_eq!(
        s.send_analysis(sub, &data(&[0.0; 63]), now),
        Err(AnalysisSendError::WrongLength)
    );
    assert_eq!(s.telemetry_shed(), 0);
}

#[test]
fn nothing_is_sent_once_the_session_is_not_open() {
    let mut d = Mock::default();
    let (mut s, mut wire, _) = open(&Setup::default(), &mut d);
    assert!(is_ack(&subscribe(
        &mut s,
        &mut d,
        &mut wire,
        2,
        scope(0, 16, 30)
    )));
    send(&mut s, &frame(3, &Goodbye {}));
    s.poll(3 * MS, &mut d);
    assert_eq!(s.analysis_due(100 * MS).count(), 0);
    assert_eq!(
        s.send_analysis(sub_of(scope(0, 16, 30)), &data(&[0.0; 32]), 100 * MS),
        Err(AnalysisSendError::NotOpen)
    );
}

#[test]
fn a_slow_reader_sheds_analysis_before_meters_and_never_an_answer() {
    for attachments in [true, false] {
        let mut d = Mock::default();
        let setup = Setup {
            client_asks: attachments,
            tx: 48 * 1024,
            ..Setup::default()
        };
        let (mut s, mut wire, _) = open(&setup, &mut d);
        assert!(is_ack(&subscribe(
            &mut s,
            &mut d,
            &mut wire,
            2,
            spectrum(0, 1024, 60)
        )));
        send(
            &mut s,
            &frame(
                3,
                &Subscribe {
                    stream: Stream::Meters,
                    rate_hz: 60,
                },
            ),
        );
        s.poll(2 * MS, &mut d);
        wire.take(&mut s, 2 * MS);
        let sub = sub_of(spectrum(0, 1024, 60));
        let db: Vec<f32> = (0..1024).map(|i| -160.0 + i as f32 / 7.0).collect();
        let mut meters = Meters::default();
        for _ in 0..16 {
            meters.peak.push(0.5).unwrap();
            meters.rms.push(0.25).unwrap();
        }
        // The client stops reading. Analysis first goes out, then is shed...
        let mut analysis_sent = 0;
        while s.send_analysis(sub, &data(&db), 3 * MS).is_ok() {
            analysis_sent += 1;
        }
        assert!(analysis_sent >= 1);
        assert_eq!(s.analysis_shed(), 1);
        assert_eq!(
            s.send_analysis(sub, &data(&db), 3 * MS),
            Err(AnalysisSendError::Shed)
        );
        // ...while meters still fit (their reserve is smaller): the order the spec promises.
        let before = s.tx_pending().len();
        let mut meters_after = 0;
        while s.send_telemetry(Stream::Meters, &meters, 3 * MS) {
            meters_after += 1;
        }
        // The gap between the two thresholds is what meters could still use: analysis stopped
        // with about ANALYSIS_RESERVE free, meters with about TELEMETRY_RESERVE.
        let meters_bytes = s.tx_pending().len() - before;
        let gap = ANALYSIS_RESERVE - TELEMETRY_RESERVE;
        assert!(
            meters_bytes + 1024 >= gap,
            "attachments={attachments}: meters used {meters_bytes} B after analysis was shed, \
             want about {gap}"
        );
        let shed = s.telemetry_shed();
        assert_eq!(
            shed,
            2 + 1,
            "two analysis frames and one meters frame shed, all counted"
        );
        // An answer still gets through after everything else was shed.
        send(&mut s, &frame(4, &Play {}));
        s.poll(4 * MS, &mut d);
        assert_eq!(d.audio.pop_front(), Some(4));
        s.answer(4, Answer::Ack { sample: Some(9) })
            .expect("room kept for answers");
        let pong_id = 5;
        send(
            &mut s,
            &frame(
                pong_id,
                &Ping {
                    nonce: 1,
                    t_client_us: None,
                    rt: false,
                },
            ),
        );
        s.poll(5 * MS, &mut d);
        let got = wire.take(&mut s, 5 * MS);
        let analysis: Vec<_> = got
            .iter()
            .filter(|g| matches!(g.message, ServerMessage::Analysis(_)))
            .collect();
        assert_eq!(analysis.len(), analysis_sent);
        assert!(analysis
            .iter()
            .all(|g| g.attachment == attachments && g.values == db));
        let n_meters = got
            .iter()
            .filter(|g| matches!(g.message, ServerMessage::Meters(_)))
            .count();
        assert_eq!(n_meters, meters_after);
        assert!(got
            .iter()
            .any(|g| g.reference == Some(4) && matches!(g.message, ServerMessage::Ack(_))));
        assert!(got
            .iter()
            .any(|g| g.reference == Some(pong_id) && matches!(g.message, ServerMessage::Pong(_))));
    }
}

#[test]
fn non_finite_values_are_sent_as_the_largest_f32_in_both_forms() {
    for client_asks in [true, false] {
        let mut d = Mock::default();
        let setup = Setup {
            client_asks,
            ..Setup::default()
        };
        let (mut s, mut wire, _) = open(&setup, &mut d);
        assert!(is_ack(&subscribe(
            &mut s,
            &mut d,
            &mut wire,
            2,
            scope(0, 16, 30)
        )));
        let mut v = [0.25f32; 32];
        v[0] = f32::NAN;
        v[17] = f32::INFINITY;
        v[31] = f32::NEG_INFINITY;
        s.send_analysis(sub_of(scope(0, 16, 30)), &data(&v), 3 * MS)
            .unwrap();
        let got = wire.take(&mut s, 3 * MS);
        let mut want = [0.25f32; 32];
        want[0] = f32::MAX;
        want[17] = f32::MAX;
        want[31] = f32::MAX;
        assert_eq!(got[0].values, want, "client_asks={client_asks}");
    }
}

//! The analysis streams end to end (issue 14, item 2): a simulated audio thread publishing
//! known signals into taps, the real network thread, `examples/signal`'s own analysis worker
//! (Hann window + `realfft`, min/max decimation) and the real Rust client, in both encodings.
//!
//! What is proved, each with a negative control in the same test:
//! - a 1 kHz sine at amplitude 0.5 peaks at its bin (±1) at −6.02 dBFS (±1 dB); the same check
//!   rejects 2 kHz and −12 dB;
//! - scope min/max are exactly the min/max of the samples each point covers (recomputed from the
//!   known signal and the frame's `sample`/`samples_per_point`); shifted by one point they are not;
//! - a subscription at rate R gives R ± 20 % frames per second of the engine's sample clock;
//! - a slow reader: analysis frames are shed (a gap in their sample clock) while meters keep
//!   coming (counted between the gap's two frames), and every command gets its ack; a phase
//!   where the client reads shows no gap (the gap detector is not trivially true).
#![cfg(feature = "std")]

mod analysis_support;

use std::time::{Duration, Instant};

use analysis_support::{tone, Rig, BLOCK, RATE};
use loophole_ipc::client::{Client, Received};
use loophole_ipc::message::{
    AnalysisMeta, AnalysisStream, ParamSet, ServerMessage, Stream, Subscribe, SubscribeAnalysis,
};
use loophole_ipc::net::Server;

fn subscribe(c: &mut Client, stream: AnalysisStream, tap: u16, size: u16, rate_hz: u16) {
    let mut other = Vec::new();
    let sub = SubscribeAnalysis {
        stream,
        tap,
        size,
        rate_hz,
    };
    let answer = c.request(&sub, &mut other).unwrap();
    assert!(matches!(answer, ServerMessage::Ack(_)), "{answer:?}");
}

/// The next `n` frames of `stream` (other messages dropped).
fn frames(c: &mut Client, stream: AnalysisStream, n: usize) -> Vec<(AnalysisMeta, Vec<f32>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} frames", out.len());
        let r = c.recv().unwrap();
        if let Some((m, v)) = r.analysis() {
            if m.stream == stream {
                out.push((*m, v.to_vec()));
            }
        }
    }
    out
}

/// The check of the spectrum test: the peak bin is within ±1 of `hz` and its level within
/// ±1 dB of `db`. Returns what was wrong.
fn check_peak(m: &AnalysisMeta, db: &[f32], hz: f64, level: f32) -> Result<(), String> {
    let (k, peak) = db
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::MIN), |a, (k, v)| if v > a.1 { (k, v) } else { a });
    let want_bin = hz / f64::from(m.hz_per_bin());
    if (k as f64 - want_bin).abs() > 1.0 {
        return Err(format!("peak at bin {k}, want {want_bin:.2}"));
    }
    if (peak - level).abs() > 1.0 {
        return Err(format!("peak {peak:.2} dB, want {level:.2}"));
    }
    Ok(())
}

#[test]
fn a_1_khz_sine_peaks_at_its_bin_and_level_in_both_encodings() {
    let rig = Rig::start(Server::builder());
    for attachments in [false, true] {
        let mut c = rig.client(attachments);
        assert_eq!(c.welcome().taps, 2);
        assert_eq!(c.welcome().attachments, attachments);
        subscribe(&mut c, AnalysisStream::Spectrum, 0, 1024, 30);
        let got = frames(&mut c, AnalysisStream::Spectrum, 5);
        for (m, db) in &got {
            assert_eq!(m.attachment, attachments);
            assert_eq!((m.tap, m.size, m.sample_rate), (0, 1024, RATE));
            assert_eq!(db.len(), 1024);
            assert!(db.iter().all(|&v| v >= -160.0 && v.is_finite()));
            check_peak(m, db, 1000.0, -6.02).unwrap();
            // Negative controls: the same check rejects a wrong frequency and a wrong level.
            assert!(check_peak(m, db, 2000.0, -6.02).is_err());
            assert!(check_peak(m, db, 1000.0, -12.04).is_err());
        }
        // Another tap, another tone: 3 kHz at full scale (0 dB, ±1 for the Hann scallop).
        subscribe(&mut c, AnalysisStream::Spectrum, 1, 256, 30);
        let got = frames(&mut c, AnalysisStream::Spectrum, 10);
        let (m, db) = got.iter().find(|(m, _)| m.tap == 1).unwrap();
        check_peak(m, db, 3000.0, 0.0).unwrap();
        assert!(check_peak(m, db, 1000.0, 0.0).is_err());
    }
}

/// Min and max of the known signal over `[first, first + spp)`.
fn true_range(tap: usize, first: u64, spp: u64) -> (f32, f32) {
    (first..first + spp)
        .map(|i| tone(tap, i))
        .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Whether `values` (min then max) are the known signal's ranges for a window ending at
/// `last`, shifted by `shift` points.
fn scope_matches(m: &AnalysisMeta, values: &[f32], shift: i64) -> bool {
    let n = usize::from(m.size);
    let spp = u64::from(m.samples_per_point);
    let first = (m.sample + 1) as i64 - (n as i64) * spp as i64 + shift * spp as i64;
    (0..n).all(|i| {
        let start = first + i as i64 * spp as i64;
        if start < 0 {
            return false;
        }
        let (lo, hi) = true_range(0, start as u64, spp);
        values[i] == lo && values[n + i] == hi
    })
}

#[test]
fn scope_min_max_are_the_ranges_of_the_samples_each_point_covers() {
    let rig = Rig::start(Server::builder());
    for attachments in [false, true] {
        let mut c = rig.client(attachments);
        subscribe(&mut c, AnalysisStream::Scope, 0, 256, 20);
        for (m, v) in frames(&mut c, AnalysisStream::Scope, 3) {
            // 48000 / 20 / 256 → 10 samples per point: the window covers the frame interval.
            assert_eq!((m.size, m.samples_per_point), (256, 10));
            assert!(
                scope_matches(&m, &v, 0),
                "min/max do not bracket the signal"
            );
            assert!(
                !scope_matches(&m, &v, 1),
                "negative control: shifted by a point"
            );
            let peak = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            assert!(
                (peak - 0.5).abs() < 1e-3,
                "peaks survive decimation: {peak}"
            );
        }
    }
}

/// Frames of `stream` per second of the engine's sample clock, over `frames` consecutive ones.
fn rate_of(got: &[(AnalysisMeta, Vec<f32>)]) -> f64 {
    let first = got.first().unwrap().0.sample;
    let last = got.last().unwrap().0.sample;
    (got.len() - 1) as f64 * f64::from(RATE) / (last - first) as f64
}

#[test]
fn a_subscription_at_rate_r_gives_r_frames_per_second_of_sample_clock() {
    let rig = Rig::start(Server::builder());
    let mut c = rig.client(true);
    subscribe(&mut c, AnalysisStream::Scope, 0, 128, 30);
    subscribe(&mut c, AnalysisStream::Spectrum, 1, 512, 10);
    let mut scope = Vec::new();
    let mut spectrum = Vec::new();
    // 2 s of sample clock of the spectrum stream, counting both.
    while spectrum.len() < 21 {
        let r = c.recv().unwrap();
        if let Some((m, v)) = r.analysis() {
            match m.stream {
                AnalysisStream::Scope => scope.push((*m, v.to_vec())),
                AnalysisStream::Spectrum => spectrum.push((*m, v.to_vec())),
            }
        }
    }
    let (rs, rf) = (rate_of(&scope), rate_of(&spectrum));
    eprintln!("rates: scope {rs:.2} (30 asked), spectrum {rf:.2} (10 asked) frames/s");
    assert!(
        (24.0..=36.0).contains(&rs),
        "scope at 30 Hz: {rs:.1} frames/s"
    );
    assert!(
        (8.0..=12.0).contains(&rf),
        "spectrum at 10 Hz: {rf:.1} frames/s"
    );
    // Each frame is new: the sample clock only goes forward.
    assert!(scope.windows(2).all(|w| w[1].0.sample > w[0].0.sample));
    // Re-subscribing the same key replaces its rate.
    subscribe(&mut c, AnalysisStream::Scope, 0, 128, 5);
    let _ = frames(&mut c, AnalysisStream::Scope, 2); // frames already on the way
    let got = frames(&mut c, AnalysisStream::Scope, 6);
    let r = rate_of(&got);
    assert!((4.0..=6.0).contains(&r), "scope at 5 Hz: {r:.1} frames/s");
}

/// Callbacks of 2 048 frames (42.7 ms) under a 60 Hz subscription (16.7 ms): most due frames
/// find no new block, and the worker recomputes the same window. Each frame still carries a
/// window this session was not sent (envelope.md, "Rate and freshness"): every `sample` is new,
/// and the rate falls to the blocks' (23.4 per second). Fails on the hub that compared only the
/// worker's submission count (the same window went out two or three times). Control: with
/// 128-frame blocks the rate is the asked 60 Hz ± 20 %, so the check does not pass by starving.
#[test]
fn blocks_longer_than_the_interval_never_repeat_a_window() {
    let distinct = |block: usize| -> (f64, Vec<u64>) {
        let rig = Rig::start_with_block(Server::builder(), block);
        let mut c = rig.client(false);
        subscribe(&mut c, AnalysisStream::Scope, 0, 128, 60);
        let got = frames(&mut c, AnalysisStream::Scope, 24);
        let samples: Vec<u64> = got.iter().map(|(m, _)| m.sample).collect();
        (rate_of(&got), samples)
    };
    let (rate, samples) = distinct(2048);
    assert!(
        samples.windows(2).all(|w| w[1] > w[0]),
        "a window sent again: {samples:?}"
    );
    assert!(
        (18.0..=28.0).contains(&rate),
        "{rate:.1} frames/s, {samples:?}"
    );
    let (rate, _) = distinct(BLOCK);
    assert!(
        (48.0..=72.0).contains(&rate),
        "128-frame blocks: {rate:.1} frames/s"
    );
}

/// Largest gap between consecutive analysis frames (in samples), with the number of meters
/// frames received between those two frames.
fn largest_gap(log: &[Received]) -> (u64, usize) {
    let mut best = (0, 0);
    let mut last: Option<u64> = None;
    let mut meters = 0;
    for r in log {
        match &r.message {
            ServerMessage::Meters(_) => meters += 1,
            ServerMessage::Analysis(m) => {
                if let Some(prev) = last {
                    let gap = m.sample - prev;
                    if gap > best.0 {
                        best = (gap, meters);
                    }
                }
                last = Some(m.sample);
                meters = 0;
            }
            _ => {}
        }
    }
    best
}

#[test]
fn a_slow_reader_loses_analysis_before_meters_and_never_an_ack() {
    // A 64 KiB transmit buffer and small kernel buffers, so the engine's buffer is what fills;
    // analysis frames (~5 KB) are shed once less than 32 KiB would stay free, meters (~100 B)
    // only below 2 KiB: a 3 s stall's 150 meters frames fit in between. With one reserve for
    // both (the mutant checked in the report) the meters are shed too and the count fails.
    let rig = Rig::start(
        Server::builder()
            .tx_buffer(64 * 1024)
            .socket_send_buffer(Some(16 * 1024))
            .slow_consumer_timeout(Duration::from_secs(20))
            .heartbeat_timeout(Duration::from_secs(20)),
    );
    let mut c = rig.client(false);
    let stream = c.stream().try_clone().unwrap();
    let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(16 * 1024);
    let mut log = Vec::new();
    let mut other = Vec::new();
    for (stream, rate_hz) in [(Stream::Meters, 50), (Stream::Health, 4)] {
        let sub = Subscribe { stream, rate_hz };
        assert!(matches!(
            c.request(&sub, &mut other).unwrap(),
            ServerMessage::Ack(_)
        ));
    }
    subscribe(&mut c, AnalysisStream::Scope, 0, 256, 60);
    // Phase 1, reading: no gap (the negative control of the gap detector).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(700) {
        log.push(c.recv().unwrap());
    }
    let interval = u64::from(RATE) / 60;
    let (gap, _) = largest_gap(&log);
    assert!(gap < 3 * interval, "a gap while reading: {gap} samples");
    // Phase 2: not reading for 3 s while sending 40 commands.
    let mut ids = Vec::new();
    for i in 0..40 {
        let p = ParamSet {
            node: 1,
            param: 0,
            value: 100.0 + i as f32,
            ramp_ms: None,
        };
        ids.push(c.send(&p).unwrap());
        std::thread::sleep(Duration::from_millis(75));
    }
    // Phase 3: read everything (slowly at first: the buffers drain).
    let mut acks = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) || acks < ids.len() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "acks {acks} of {}",
            ids.len()
        );
        let r = c.recv().unwrap();
        if r.reference.is_some_and(|id| ids.contains(&id)) {
            assert!(matches!(r.message, ServerMessage::Ack(_)), "{r:?}");
            acks += 1;
        }
        log.push(r);
    }
    assert_eq!(acks, ids.len(), "every command got its ack");
    // Analysis was shed during the stall: a gap of well over a second of sample clock...
    let (gap, meters_in_gap) = largest_gap(&log);
    assert!(
        gap > u64::from(RATE),
        "no analysis frame was shed: gap {gap}"
    );
    // ...while the meters kept coming: about 50 per second of that gap (±20 %, not shed).
    let want = gap as f64 / f64::from(RATE) * 50.0;
    assert!(
        (meters_in_gap as f64 - want).abs() <= want * 0.2,
        "{meters_in_gap} meters frames in a {gap}-sample gap, want ~{want:.0}"
    );
    // The engine counted the shed frames.
    let shed = log.iter().rev().find_map(|r| match &r.message {
        ServerMessage::Health(h) => Some(h.telemetry_shed),
        _ => None,
    });
    eprintln!(
        "slow reader: analysis gap {gap} samples, {meters_in_gap} meters frames in it, \
         {acks} acks of {}, telemetry_shed {shed:?}",
        ids.len()
    );
    assert!(shed.is_some_and(|n| n > 0), "telemetry_shed {shed:?}");
}

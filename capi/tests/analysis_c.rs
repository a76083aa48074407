//! Issue 14 through the C ABI: the C11 engine of `tests/test_analysis.c` (one tap, a known
//! sine, a naive-DFT spectrum served by its analysis thread through `loophole_analysis_*`) and
//! the real Rust client, once with binary attachments and once with JSON arrays. Checks: the
//! frames carry exactly the values the C side submitted (matched by `sample`), the peak is at
//! the sine's bin with its amplitude (±1 dB), and the negative control: a `scope` request the
//! engine reads but never submits produces no frame.
//!
//! `#[ignore]`d because the engine binary comes from the section script:
//! `LOOPHOLE_C_ANALYSIS_ENGINE=target/capi/test_analysis cargo test -p loophole-ipc-capi --test analysis_c -- --ignored`
//! (the test fails, not passes, when the variable is missing).

#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::message::{AnalysisStream, ServerMessage, SubscribeAnalysis};

const BINS: u16 = 64;
const SINE_BIN: usize = 8;
/// 20·log10(0.5): the sine's amplitude in dBFS.
const SINE_DB: f32 = -6.0206;

struct Engine {
    child: Child,
    lines: Receiver<String>,
    port: u16,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_engine(seconds: u32, mode: Option<&str>) -> Engine {
    let bin = std::env::var("LOOPHOLE_C_ANALYSIS_ENGINE").expect(
        "LOOPHOLE_C_ANALYSIS_ENGINE must name the C engine binary (scripts/test.d/30-capi.sh)",
    );
    let mut child = Command::new(bin)
        .arg(seconds.to_string())
        .args(mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the C engine");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("announcement line");
    let json = first
        .strip_prefix("LOOPHOLE_LISTEN ")
        .unwrap_or_else(|| panic!("not an announcement: {first}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let port = v["port"].as_u64().unwrap() as u16;
    Engine { child, lines, port }
}

/// `SUBMIT <sample> <n> <v0> ...` lines seen so far, by sample; and whether scope was requested.
fn submitted(lines: &Receiver<String>, map: &mut HashMap<u64, Vec<f32>>, scope_seen: &mut bool) {
    while let Ok(line) = lines.try_recv() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("SUBMIT") => {
                let sample: u64 = it.next().unwrap().parse().unwrap();
                let n: usize = it.next().unwrap().parse().unwrap();
                let v: Vec<f32> = it.map(|x| x.parse().unwrap()).collect();
                assert_eq!(v.len(), n, "{line}");
                map.insert(sample, v);
            }
            Some("SCOPE_REQUESTED") => *scope_seen = true,
            _ => {}
        }
    }
}

fn session(engine: &Engine, attachments: bool) {
    let addr: SocketAddr = ([127, 0, 0, 1], engine.port).into();
    let mut opts = ClientOptions::default();
    opts.attachments = attachments;
    let mut client = Client::connect(addr, &opts).expect("connect");
    assert_eq!(
        client.welcome().taps,
        1,
        "welcome announces the C config's tap"
    );
    assert_eq!(client.welcome().attachments, attachments);
    let mut other = Vec::new();
    for (stream, size) in [
        (AnalysisStream::Spectrum, BINS),
        (AnalysisStream::Scope, 16),
    ] {
        let sub = SubscribeAnalysis {
            stream,
            tap: 0,
            size,
            rate_hz: 30,
        };
        let answer = client.request(&sub, &mut other).unwrap();
        assert!(matches!(answer, ServerMessage::Ack(_)), "{answer:?}");
    }
    let mut frames = Vec::new();
    let mut scope_frames = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let Some(r) = client.recv_timeout(Duration::from_millis(100)).unwrap() else {
            continue;
        };
        if let Some((meta, values)) = r.analysis() {
            match meta.stream {
                AnalysisStream::Spectrum => {
                    assert_eq!(meta.attachment, attachments, "the negotiated encoding");
                    assert_eq!((meta.tap, meta.size, meta.sample_rate), (0, BINS, 48_000));
                    frames.push((meta.sample, values.to_vec()));
                }
                AnalysisStream::Scope => scope_frames += 1,
            }
        }
    }
    drop(client);
    std::thread::sleep(Duration::from_millis(100)); // the last SUBMIT lines
    let mut map = HashMap::new();
    let mut scope_seen = false;
    submitted(&engine.lines, &mut map, &mut scope_seen);
    let form = if attachments { "attachment" } else { "JSON" };
    assert!(
        frames.len() >= 10,
        "{form}: {} spectrum frames in 1.5 s at 30 Hz",
        frames.len()
    );
    for (sample, values) in &frames {
        let sent = map
            .get(sample)
            .unwrap_or_else(|| panic!("{form}: frame for sample {sample} was never submitted"));
        assert_eq!(
            values, sent,
            "{form}: the frame carries the submitted values"
        );
        let peak = (0..values.len())
            .max_by(|&a, &b| values[a].total_cmp(&values[b]))
            .unwrap();
        assert!(peak.abs_diff(SINE_BIN) <= 1, "{form}: peak at bin {peak}");
        assert!(
            (values[SINE_BIN] - SINE_DB).abs() <= 1.0,
            "{form}: {} dB at the sine's bin",
            values[SINE_BIN]
        );
    }
    // The negative control: the engine saw the scope request but never submitted one.
    assert!(scope_seen, "{form}: the scope request reached the C engine");
    assert_eq!(
        scope_frames, 0,
        "{form}: a request never submitted produced frames"
    );
    eprintln!(
        "{form}: {} spectrum frames, all equal to what C submitted; 0 scope frames",
        frames.len()
    );
}

#[test]
#[ignore = "needs LOOPHOLE_C_ANALYSIS_ENGINE (run by scripts/test.d/30-capi.sh)"]
fn a_c_engine_serves_spectrum_through_the_abi_in_both_encodings() {
    let engine = spawn_engine(6, None);
    session(&engine, true);
    session(&engine, false);
}

/// The checks above fail on an engine that misbehaves: one that submits scope values too (a
/// frame for it arrives) and one whose reported values differ from what it submitted.
#[test]
#[ignore = "needs LOOPHOLE_C_ANALYSIS_ENGINE (run by scripts/test.d/30-capi.sh)"]
fn negative_controls_the_same_checks_flag_a_misbehaving_engine() {
    for (mode, expect) in [
        ("serve-scope", "a request never submitted produced frames"),
        ("misreport", "the frame carries the submitted values"),
    ] {
        let engine = spawn_engine(4, Some(mode));
        let got = std::panic::catch_unwind(|| session(&engine, true));
        let msg = match got {
            Ok(()) => panic!("{mode}: the check passed an engine it must flag"),
            Err(e) => e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        assert!(
            msg.contains(expect),
            "{mode}: failed for another reason: {msg}"
        );
        eprintln!("control {mode}: flagged ({expect})");
    }
}

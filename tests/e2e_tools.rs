//! End-to-end checks of aura's other subcommands and of its limits: `send`, `ping --rt`,
//! `watch`, the restart budget, an engine that cannot start, and aura itself being killed.

#![cfg(unix)] // kills and signals children by Unix signal; Windows runs the demo in scripts/test.d/20-platforms.sh

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{
    assert_sine_on_tap, aura, example, kill, missed_after_idle, spectrum_peaks_at, wait_gone,
    watch_frames, Proc, TEST_TONE,
};
use serde_json::Value;

/// The first event named `name`.
fn the_event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:?}"))
}

fn answer(args: &[&str]) -> (Option<i32>, Value, Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(args));
    let code = p.wait(deadline).code();
    let a = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "answer")
        .unwrap_or_else(|| panic!("no answer\n{}", p.dump()));
    (code, a, p)
}

/// `send` passes a command through as written and reports the engine's verdict: an ack with a
/// sample position for a valid `param.set`; `unknown_node` (exit 1) for a node the engine does
/// not have; `node_exists` from the control thread's model graph.
#[test]
fn send_reports_acks_and_errors() {
    let (code, a, p) = answer(&[
        "send",
        "param.set",
        r#"{"node":1,"param":0,"value":330,"ramp_ms":50}"#,
    ]);
    assert_eq!(code, Some(0), "{}", p.dump());
    assert_eq!(a["ok"], true, "{a}");
    assert!(
        a["sample"].is_u64(),
        "an audio-route ack carries the sample: {a}"
    );

    let (code, a, p) = answer(&["send", "param.set", r#"{"node":9,"param":0,"value":1}"#]);
    assert_eq!(code, Some(1), "{}", p.dump());
    assert_eq!(a["code"], "unknown_node", "{a}");

    let (code, a, p) = answer(&["send", "graph.add_node", r#"{"node":1,"kind":"osc"}"#]);
    assert_eq!(code, Some(1), "{}", p.dump());
    assert_eq!(a["code"], "node_exists", "{a}");

    // engine.shutdown: acked, then the engine says goodbye and exits by itself (no SIGTERM),
    // and aura does not mistake that for a crash.
    let (code, a, p) = answer(&["send", "engine.shutdown", "{}"]);
    assert_eq!(code, Some(0), "{}", p.dump());
    assert_eq!(a["ok"], true, "{a}");
    let events = p.events();
    assert!(
        !events.iter().any(|e| e["event"] == "connection_lost"),
        "{}",
        p.dump()
    );
    let stopped = the_event(&events, "engine_stopped");
    assert!(
        stopped["how"]
            .as_str()
            .unwrap()
            .starts_with("exited by itself"),
        "{stopped}"
    );
}

/// `ping --rt` goes through the audio thread: every ping answered, percentiles reported.
#[test]
fn ping_through_the_audio_thread() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&["ping", "--count", "50", "--rt"]));
    assert!(p.wait(deadline).success(), "{}", p.dump());
    let r = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "ping")
        .expect("ping result");
    assert_eq!(r["rt"], true, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    let rtt = &r["round_trip_us"];
    assert_eq!(rtt["count"], 50, "{r}");
    let (p50, max) = (rtt["p50"].as_u64().unwrap(), rtt["max"].as_u64().unwrap());
    assert!(p50 > 0 && p50 <= max, "{r}");
}

/// `watch --count N --play` prints exactly N telemetry frames, of the three streams, and the
/// transport plays.
#[test]
fn watch_prints_telemetry() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&[
        "watch", "--count", "15", "--rate", "20", "--play",
    ]));
    assert!(p.wait(deadline).success(), "{}", p.dump());
    let frames: Vec<Value> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "telemetry")
        .collect();
    assert_eq!(frames.len(), 15, "{}", p.dump());
    let names: Vec<&str> = frames
        .iter()
        .map(|f| f["telemetry"]["name"].as_str().unwrap())
        .collect();
    for stream in ["meters", "transport.state", "engine.health"] {
        assert!(names.contains(&stream), "{stream} missing in {names:?}");
    }
    assert!(
        frames.iter().any(|f| f["telemetry"]["playing"] == true),
        "{}",
        p.dump()
    );
}

/// The restart budget: five restarts are granted; the sixth death within the window ends aura
/// with exit code 4 and a clear message. Every engine it started is gone afterwards.
#[test]
fn restart_budget_is_enforced() {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut p = Proc::spawn(&mut aura(&["demo", "--duration", "60"]));
    let mut pids = Vec::new();
    for restart in 0..6 {
        let e = p.expect_event(deadline, "engine_started", |e| {
            e["event"] == "engine_started"
        });
        assert_eq!(e["restart"], restart, "{e}");
        p.expect_event(deadline, "connected", |e| e["event"] == "connected");
        let pid = e["pid"].as_u64().unwrap() as u32;
        pids.push(pid);
        kill(pid, libc::SIGKILL);
    }
    let gave_up = p.expect_event(deadline, "gave_up", |e| e["event"] == "gave_up");
    assert_eq!(gave_up["deaths_in_window"], 6, "{gave_up}");
    let status = p.wait(deadline);
    assert_eq!(status.code(), Some(4), "{}", p.dump());
    assert!(p.stderr().contains("giving up"), "{}", p.dump());
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(2)),
            "engine {pid} left behind"
        );
    }
}

/// An engine that cannot start is not restarted in a loop: aura exits 3 at once and shows the
/// engine's own words.
#[test]
fn engine_that_cannot_start_is_reported() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&["--engine-arg=--block-size=3", "demo"]));
    assert_eq!(p.wait(deadline).code(), Some(3), "{}", p.dump());
    let fatal = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "fatal")
        .expect("fatal event");
    let msg = fatal["message"].as_str().unwrap();
    assert!(
        msg.contains("exited with status 2 before announcing its port"),
        "{msg}"
    );
    assert!(msg.contains("--block-size: 3 is outside"), "{msg}");
}

/// No orphan: when aura is killed outright (no chance to shut the engine down), the engine
/// still goes away — the kernel SIGTERMs it (PR_SET_PDEATHSIG) and it exits cleanly.
#[test]
fn engine_does_not_outlive_a_killed_aura() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&["demo", "--duration", "30"]));
    let e = p.expect_event(deadline, "engine_started", |e| {
        e["event"] == "engine_started"
    });
    p.expect_event(deadline, "connected", |e| e["event"] == "connected");
    let engine = e["pid"].as_u64().unwrap() as u32;
    kill(p.pid(), libc::SIGKILL);
    let _ = p.wait(deadline);
    assert!(
        wait_gone(engine, Duration::from_secs(5)),
        "engine {engine} outlived aura"
    );
}

/// The README's embedding sample (`examples/embed.rs`) is a working engine: aura can drive it.
#[test]
fn embedding_sample_is_a_working_engine() {
    let embed = e2e_support::example("embed");
    let run = |name: &str, body: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut cmd = std::process::Command::new(e2e_support::example("aura"));
        cmd.arg("--engine")
            .arg(&embed)
            .args(["--json", "send", name, body]);
        let mut p = Proc::spawn(&mut cmd);
        let code = p.wait(deadline).code();
        let a = p.events().into_iter().find(|e| e["event"] == "answer");
        (code, a.unwrap_or_else(|| panic!("no answer\n{}", p.dump())))
    };
    let (code, a) = run("transport.play", "{}");
    assert_eq!(code, Some(0), "{a}");
    assert!(a["sample"].is_u64(), "{a}");
    let (code, a) = run("param.set", r#"{"node":2,"param":0,"value":9}"#);
    assert_eq!(code, Some(1), "{a}");
    assert_eq!(a["code"], "out_of_range", "{a}");
}

/// Ctrl-C (SIGINT) during the demo: aura prints the summary so far, shuts the engine down
/// politely (it exits by itself after `engine.shutdown`, no SIGTERM needed) and exits 130.
#[test]
fn sigint_shuts_the_engine_down_politely() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&["demo", "--duration", "30"]));
    let e = p.expect_event(deadline, "engine_started", |e| {
        e["event"] == "engine_started"
    });
    p.expect_event(deadline, "ack of transport.play", |e| {
        e["event"] == "ack" && e["name"] == "transport.play"
    });
    kill(p.pid(), libc::SIGINT);
    assert_eq!(p.wait(deadline).code(), Some(130), "{}", p.dump());
    let events = p.events();
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("summary");
    assert_eq!(summary["ended_early"], "interrupted", "{summary}");
    let stopped = the_event(&events, "engine_stopped");
    assert!(
        stopped["how"]
            .as_str()
            .unwrap()
            .starts_with("exited by itself"),
        "{stopped}"
    );
    assert!(wait_gone(
        e["pid"].as_u64().unwrap() as u32,
        Duration::from_secs(2)
    ));
}

/// `watch --tap 2` against the real `signal`: its test tone (1 kHz at amplitude 0.5) shows as a
/// spectrum peaking at 1.0 kHz, -6.02 dBFS ± 1 dB, and a scope of ±0.5; both as attachments
/// (aura asks for them). Negative control: the master tap (0) of a stopped engine is silent,
/// so the same peak check fails there.
#[test]
fn watch_shows_the_test_tone_on_its_tap() {
    let frames = |tap: &str| -> Vec<Value> {
        watch_frames(&mut aura(&[
            "watch",
            "--seconds",
            "1",
            "--rate",
            "10",
            "--tap",
            tap,
        ]))
    };
    assert_sine_on_tap(&frames("2"), 2, TEST_TONE.0);
    // The stopped master: silent, the check fails.
    let master = frames("0");
    let spectrum = master
        .iter()
        .find(|f| f["name"] == "spectrum")
        .expect("a spectrum frame");
    assert!(
        !spectrum_peaks_at(spectrum, TEST_TONE.0, TEST_TONE.1),
        "{spectrum}"
    );
}

/// A subscription made after the engine ran 2 s unwatched (its 65 536-sample taps overwrote
/// ~30 000 samples meanwhile): every frame's `missed` is 0, the first one included
/// (envelope.md: samples lost *since the previous frame of this subscription*; a 10 Hz watch
/// drains the tap every 4 800 samples). Fails on the engine that counted, in the first frame,
/// what the tap lost before anyone subscribed (94 848 after 3 s).
#[test]
fn a_late_subscription_counts_only_its_own_losses() {
    let frames = missed_after_idle(example("signal").to_str().unwrap(), Duration::from_secs(2));
    assert!(frames.len() >= 6, "{frames:?}");
    assert!(frames.iter().all(|(_, missed)| *missed == 0), "{frames:?}");
}

/// `signal` started by hand, without a session token (so `aura --connect` needs none), and the
/// port it announced.
fn hand_started_signal(deadline: Instant) -> (Proc, u16) {
    let mut cmd = std::process::Command::new(example("signal"));
    cmd.arg("--no-rt").env_remove("LOOPHOLE_SESSION_TOKEN");
    let mut engine = Proc::spawn(&mut cmd);
    let line = engine
        .next_line(deadline)
        .unwrap_or_else(|| panic!("no announcement\n{}", engine.dump()));
    let a = loophole_ipc::net::Announcement::parse_line(&line)
        .unwrap_or_else(|e| panic!("{e}: {line}"));
    (engine, a.port)
}

/// `--connect` to an engine started by hand that is then killed: aura says it reconnects to
/// that address (an attached engine is not restarted), names the address in `connection
/// refused`, and exits 3 ("engine could not start or be reached"). Failed on the previous aura:
/// "restarting the engine in 100 ms", "cannot connect to the engine: connection refused",
/// exit 1. Control: while the engine lives, the same session runs and prints telemetry.
#[test]
fn attached_engine_killed_is_reconnected_then_reported_unreachable() {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (engine, port) = hand_started_signal(deadline);
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(example("aura"));
    cmd.args(["--connect", &addr, "watch", "--seconds", "30"])
        .env_remove("LOOPHOLE_SESSION_TOKEN");
    let mut p = Proc::spawn(&mut cmd);
    // Control: attached and watching (human output: one telemetry line on stdout).
    let line = p
        .next_line(deadline)
        .unwrap_or_else(|| panic!("no telemetry\n{}", p.dump()));
    assert!(line.contains("meters") || line.contains("transport") || line.contains("health"));
    kill(engine.pid(), libc::SIGKILL);
    let code = p.wait(deadline).code();
    let err = p.stderr();
    assert_eq!(code, Some(3), "{}", p.dump());
    assert!(err.contains(&format!("reconnecting to {addr}")), "{err}");
    assert!(!err.contains("restarting"), "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to the engine at {addr}: connection refused"
        )),
        "{err}"
    );
}

/// `watch --rate` outside 1..=120 is refused as a bad argument (exit 2, before any engine is
/// started); the previous aura clamped 0 to 1 and 500 to 120 silently and ran. Control: 120,
/// the upper bound, runs.
#[test]
fn watch_refuses_a_rate_outside_1_to_120() {
    let deadline = Instant::now() + Duration::from_secs(20);
    for rate in ["0", "500", "-1"] {
        let mut p = Proc::spawn(&mut aura(&["watch", "--count", "3", "--rate", rate]));
        assert_eq!(
            p.wait(deadline).code(),
            Some(2),
            "--rate {rate}\n{}",
            p.dump()
        );
        assert!(
            p.stderr()
                .contains(&format!("--rate: {rate} is outside 1..=120")),
            "{}",
            p.dump()
        );
        assert!(p.events().is_empty(), "no engine started: {}", p.dump());
    }
    let mut p = Proc::spawn(&mut aura(&["watch", "--count", "3", "--rate", "120"]));
    assert_eq!(p.wait(deadline).code(), Some(0), "{}", p.dump());
}

/// `watch --tap N` with N ≥ welcome.taps ends aura with exit code 1 (documented in --help),
/// naming the taps the engine has, before subscribing anything; the previous aura warned and
/// exited 0. Control: tap 2 (signal's last) is watched (`watch_shows_the_test_tone_on_its_tap`).
#[test]
fn watch_of_a_tap_the_engine_lacks_fails() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(&mut aura(&["watch", "--seconds", "1", "--tap", "3"]));
    assert_eq!(p.wait(deadline).code(), Some(1), "{}", p.dump());
    let fatal = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "fatal")
        .unwrap_or_else(|| panic!("no fatal event\n{}", p.dump()));
    assert_eq!(
        fatal["message"], "--tap 3: the engine has taps 0..=2 (welcome.taps = 3)",
        "{fatal}"
    );
    assert!(
        !p.events().iter().any(|e| e["event"] == "telemetry"),
        "{}",
        p.dump()
    );
    let help = std::process::Command::new(example("aura"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains(
            "A tap the engine does not have ends aura with exit\n                        code 1"
        ),
        "{help}"
    );
}

/// A `ping` is answered by a pong, and aura says so: `pong` in the text, a `pong` event (not
/// `ack`) and `"reply":"pong"` with --json. After `engine.shutdown` aura itself sent, the engine
/// "exited after the engine.shutdown aura asked for", not "by itself". Both failed on the
/// previous aura ("ping (id …): ack in …", "event":"ack"). Control: a `transport.play` is
/// still an ack.
#[test]
fn ping_is_answered_by_a_pong_and_the_shutdown_was_asked_for() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cmd = std::process::Command::new(example("aura"));
    cmd.arg("--engine")
        .arg(example("signal"))
        .args(["send", "ping", r#"{"nonce":5}"#]);
    let mut p = Proc::spawn(&mut cmd);
    assert_eq!(p.wait(deadline).code(), Some(0), "{}", p.dump());
    let text = p.stdout.join("\n");
    assert!(
        text.contains("ping (id ") && text.contains("): pong in "),
        "{text}"
    );
    assert!(!text.contains("ack"), "{text}");
    let err = p.stderr();
    assert!(
        err.contains("exited after the engine.shutdown aura asked for (exit status: 0)"),
        "{err}"
    );
    assert!(!err.contains("by itself"), "{err}");

    let (code, a, p) = answer(&["send", "ping", r#"{"nonce":5}"#]);
    assert_eq!(code, Some(0), "{}", p.dump());
    assert_eq!(a["reply"], "pong", "{a}");
    let events = p.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "pong" && e["name"] == "ping"),
        "{}",
        p.dump()
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "ack" && e["name"] == "ping"),
        "{}",
        p.dump()
    );
    let stopped = the_event(&events, "engine_stopped");
    assert_eq!(stopped["shutdown_sent"], true, "{stopped}");

    let (code, a, p) = answer(&["send", "transport.play", "{}"]);
    assert_eq!(code, Some(0), "{}", p.dump());
    assert_eq!(a["reply"], "ack", "{a}");
    assert!(
        p.events()
            .iter()
            .any(|e| e["event"] == "ack" && e["name"] == "transport.play"),
        "{}",
        p.dump()
    );
}

/// `aura --help` explains the summary's `lost`, `unanswered` and `shed` (one line each).
#[test]
fn help_explains_the_summary_terms() {
    let help = std::process::Command::new(example("aura"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for term in ["lost", "unanswered", "shed"] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{term} ")))
            .unwrap_or_else(|| panic!("no line explaining `{term}`:\n{help}"));
        assert!(line.trim_start().len() > term.len() + 20, "{line}");
    }
}

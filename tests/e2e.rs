//! End-to-end: the example engine (`signal`) and the example supervising client (`aura`) run as
//! separate processes over loopback. Every test is bounded in time; children are killed by
//! guards on failure.

#![cfg(unix)] // kills and signals children by Unix signal; Windows runs the demo in scripts/test.d/20-platforms.sh

mod e2e_support;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_support::{aura, demo_problems, example, kill, wait_gone, Proc};
use loophole_ipc::net::Announcement;
use serde_json::Value;

/// Relative tolerance of the play position's advance vs wall time (noisy shared 2-core VM).
const RATE_TOLERANCE: f64 = 0.2;

fn summary_of(p: &Proc) -> Value {
    p.events()
        .into_iter()
        .rev()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary\n{}", p.dump()))
}

/// The whole system, as a user runs it: aura spawns signal, discovers its port, runs the
/// scripted demo (play, sweep, seek, stop) and shuts the engine down politely.
#[test]
fn demo_end_to_end() {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut p = Proc::spawn(&mut aura(&["demo", "--duration", "3"]));
    let started = p.expect_event(deadline, "engine_started", |e| {
        e["event"] == "engine_started"
    });
    let engine_pid = started["pid"].as_u64().unwrap() as u32;
    let status = p.wait(deadline);
    assert!(status.success(), "aura failed: {status}\n{}", p.dump());
    let s = summary_of(&p);
    let problems = demo_problems(&s, RATE_TOLERANCE);
    assert!(problems.is_empty(), "{problems:#?}\n{}", p.dump());
    // Exactly one engine, never restarted; every ack was also reported as an event.
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(
        s["instances"],
        serde_json::json!([started["instance"]]),
        "{s}"
    );
    assert_eq!(s["lost"], 0, "{s}");
    let ack_events = p.events().iter().filter(|e| e["event"] == "ack").count() as u64;
    // The ack of engine.shutdown arrives after the summary.
    assert_eq!(ack_events, s["acks"].as_u64().unwrap() + 1, "{}", p.dump());
    assert!(s["telemetry"]["meters"].as_u64().unwrap() >= 30, "{s}");
    let stopped = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "engine_stopped")
        .expect("engine_stopped");
    assert!(
        stopped["how"]
            .as_str()
            .unwrap()
            .starts_with("exited by itself"),
        "{stopped}"
    );
    assert!(
        wait_gone(engine_pid, Duration::from_secs(2)),
        "engine {engine_pid} left behind"
    );
}

/// Negative control of the transport check: an engine whose device clock runs at half speed
/// advances the play position at half the announced sample rate, and the same check that
/// passes above flags it (meters and acks still check out).
#[test]
fn demo_check_flags_a_slow_device() {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut p = Proc::spawn(&mut aura(&[
        "--engine-arg=--device-speed=0.5",
        "demo",
        "--duration",
        "2.5",
    ]));
    let status = p.wait(deadline);
    assert!(status.success(), "aura failed: {status}\n{}", p.dump());
    let s = summary_of(&p);
    let problems = demo_problems(&s, RATE_TOLERANCE);
    assert_eq!(problems.len(), 1, "{problems:#?}\n{s}");
    assert!(problems[0].starts_with("transport rate"), "{problems:#?}");
    let ratio = s["transport"]["rate_ratio"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&ratio), "{s}");
}

/// Supervision: SIGKILL the engine mid-session. aura notices, restarts it with backoff, the new
/// instance (a different instance id in `welcome`) acknowledges the re-sent commands, and the
/// demo finishes with every command answered or accounted as lost with the dead engine.
#[test]
fn killed_engine_is_restarted_and_the_session_resumes() {
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut p = Proc::spawn(&mut aura(&["demo", "--duration", "6"]));
    let first = p.expect_event(deadline, "engine_started", |e| {
        e["event"] == "engine_started"
    });
    let (pid1, inst1) = (
        first["pid"].as_u64().unwrap() as u32,
        first["instance"].clone(),
    );
    p.expect_event(deadline, "ack of transport.play", |e| {
        e["event"] == "ack" && e["name"] == "transport.play"
    });
    std::thread::sleep(Duration::from_millis(400));
    kill(pid1, libc::SIGKILL);

    let exited = p.expect_event(deadline, "engine_exited", |e| e["event"] == "engine_exited");
    assert_eq!(exited["pid"], pid1, "{exited}");
    assert!(
        exited["status"].as_str().unwrap().contains("SIGKILL"),
        "{exited}"
    );
    let second = p.expect_event(deadline, "second engine_started", |e| {
        e["event"] == "engine_started"
    });
    let (pid2, inst2) = (
        second["pid"].as_u64().unwrap() as u32,
        second["instance"].clone(),
    );
    assert_eq!(second["restart"], 1, "{second}");
    assert_ne!(pid2, pid1);
    assert_ne!(
        inst2, inst1,
        "a restarted engine must announce a new instance id"
    );
    let connected = p.expect_event(deadline, "connected", |e| e["event"] == "connected");
    assert_eq!(
        connected["instance"], inst2,
        "welcome.instance of the new engine"
    );
    let resumed = p.expect_event(deadline, "session_resumed", |e| {
        e["event"] == "session_resumed"
    });
    assert_eq!(resumed["new_engine"], true, "{resumed}");
    assert_eq!(resumed["previous_instance"], inst1, "{resumed}");
    // The new instance gets the demo's graph edits again (node 10 and its edge) and the
    // transport state. Their acks come from two routes (control thread, audio thread), which
    // may interleave: collected in any order. (Before, the edits were not replayed: the new
    // engine ran without node 10.)
    let mut owed = vec!["graph.add_node", "graph.connect", "transport.play"];
    while !owed.is_empty() {
        let ack = p.expect_event(deadline, "the acks of the replayed state", |e| {
            e["event"] == "ack" && e["instance"] == inst2 && owed.iter().any(|n| e["name"] == *n)
        });
        owed.retain(|n| ack["name"] != *n);
    }

    let status = p.wait(deadline);
    assert!(status.success(), "aura failed: {status}\n{}", p.dump());
    let s = summary_of(&p);
    assert_eq!(s["restarts"], 1, "{s}");
    assert_eq!(s["instances"], serde_json::json!([inst1, inst2]), "{s}");
    let problems = demo_problems(&s, RATE_TOLERANCE);
    assert!(problems.is_empty(), "{problems:#?}\n{}", p.dump());
    assert!(wait_gone(pid1, Duration::from_secs(2)) && wait_gone(pid2, Duration::from_secs(2)));
}

fn announced(p: &mut Proc, deadline: Instant) -> Announcement {
    let line = p
        .next_line(deadline)
        .unwrap_or_else(|| panic!("no announcement\n{}", p.dump()));
    Announcement::parse_line(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A second engine on the port of a running one fails fast, with the documented message and
/// exit code 3, and prints no announcement. Control: once the first engine has exited cleanly
/// (SIGTERM → 0), the very same command binds that port.
#[test]
fn second_engine_on_a_taken_port_fails_fast() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let signal = example("signal");
    let mut first = Proc::spawn(Command::new(&signal).arg("--no-rt"));
    let port = announced(&mut first, deadline).port.to_string();

    let t0 = Instant::now();
    let mut second = Proc::spawn(Command::new(&signal).args(["--no-rt", "--port", &port]));
    let status = second.wait(deadline);
    assert_eq!(status.code(), Some(3), "{}", second.dump());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        second.stdout.is_empty(),
        "no announcement expected: {:?}",
        second.stdout
    );
    let expected = format!("signal: cannot start: port {port} on 127.0.0.1 is already in use");
    assert!(second.stderr().contains(&expected), "{}", second.dump());
    let help = Command::new(&signal).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("3  cannot start the server"),
        "exit code 3 documented"
    );

    kill(first.pid(), libc::SIGTERM);
    assert_eq!(first.wait(deadline).code(), Some(0), "{}", first.dump());
    let mut third = Proc::spawn(Command::new(&signal).args(["--no-rt", "--port", &port]));
    assert_eq!(announced(&mut third, deadline).port.to_string(), port);
    kill(third.pid(), libc::SIGTERM);
    assert_eq!(third.wait(deadline).code(), Some(0), "{}", third.dump());
}

/// A `LOOPHOLE_SESSION_TOKEN` that is not UTF-8: `signal` does not start (exit 3, the variable
/// named, no announcement) instead of running without a token, open to every local client.
/// Control: a UTF-8 token in the same variable starts it and is said to be required.
#[test]
fn a_token_that_is_not_utf8_stops_the_engine_from_starting() {
    use std::os::unix::ffi::OsStrExt as _;
    let deadline = Instant::now() + Duration::from_secs(10);
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let mut s = Proc::spawn(
        Command::new(example("signal"))
            .arg("--no-rt")
            .env("LOOPHOLE_SESSION_TOKEN", bad),
    );
    assert_eq!(s.wait(deadline).code(), Some(3), "{}", s.dump());
    assert!(s.stdout.is_empty(), "{}", s.dump());
    assert!(
        s.stderr()
            .contains("cannot start: LOOPHOLE_SESSION_TOKEN is not valid UTF-8"),
        "{}",
        s.dump()
    );
    let mut ok = Proc::spawn(
        Command::new(example("signal"))
            .arg("--no-rt")
            .env("LOOPHOLE_SESSION_TOKEN", "0123abcd"),
    );
    announced(&mut ok, deadline);
    assert!(!ok.stderr().contains("no session token"), "{}", ok.dump());
    kill(ok.pid(), libc::SIGTERM);
    assert_eq!(ok.wait(deadline).code(), Some(0), "{}", ok.dump());
}

/// Bad arguments: exit code 2 and a message naming the problem, for both programs.
#[test]
fn bad_arguments_exit_2() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = Proc::spawn(Command::new(example("signal")).args(["--block-size", "3"]));
    assert_eq!(s.wait(deadline).code(), Some(2), "{}", s.dump());
    assert!(
        s.stderr().contains("--block-size: 3 is outside 16..=8192"),
        "{}",
        s.dump()
    );
    let mut a = Proc::spawn(&mut aura(&["--bogus"]));
    assert_eq!(a.wait(deadline).code(), Some(2), "{}", a.dump());
    assert!(
        a.stderr().contains("unknown option `--bogus`"),
        "{}",
        a.dump()
    );
}

/// signal's argument messages say what is wrong: a port above 65535 is out of range (the
/// previous signal said "`70000` is not a number"), in --port and --port-range alike; a word is
/// still not a number (control). A non-loopback --host is refused (exit 3) without pointing at
/// an option signal does not have (the previous text said "allow it explicitly, with a session
/// token").
#[test]
fn signal_says_out_of_range_and_refuses_non_loopback_truthfully() {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (args, code, says) in [
        (
            &["--port", "70000"][..],
            2,
            "--port: 70000 is outside 0..=65535",
        ),
        (
            &["--port-range", "40000-70000"],
            2,
            "--port-range: 70000 is outside 1..=65535",
        ),
        (&["--port", "-1"], 2, "--port: -1 is outside 0..=65535"),
        (
            &["--port", "seventy"],
            2,
            "--port: `seventy` is not a number",
        ),
        // NaN compares false with both ends of a range: it used to run the device at speed NaN.
        (
            &["--device-speed", "NaN"],
            2,
            "--device-speed: NaN is outside 0.25..=4",
        ),
        (
            &["--sample-rate", "48000.5"],
            2,
            "--sample-rate: `48000.5` is not a whole number",
        ),
        (
            &["--no-rt", "--host", "0.0.0.0"],
            3,
            "signal: cannot start: refusing to bind 0.0.0.0: not a loopback address",
        ),
    ] {
        let mut s = Proc::spawn(Command::new(example("signal")).args(args));
        assert_eq!(
            s.wait(deadline).code(),
            Some(code),
            "{args:?}\n{}",
            s.dump()
        );
        let err = s.stderr();
        assert!(err.contains(says), "{args:?}\n{}", s.dump());
        assert!(!err.contains("explicitly"), "{err}");
        assert!(s.stdout.is_empty(), "no announcement: {:?}", s.stdout);
    }
}

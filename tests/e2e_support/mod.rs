//! Shared fixture of the end-to-end tests: the example binaries (`signal`, `aura`) run as real
//! processes, read line by line with deadlines, and killed by a guard on every exit path.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An example binary of this package, built by `cargo test` next to the test binaries:
/// tests live in `target/<profile>/deps/`, examples in `target/<profile>/examples/` (this
/// follows `CARGO_TARGET_DIR` because it starts from the running test executable).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples; or run `cargo build --examples`",
        path.display()
    );
    assert_fresh(&path, name);
    path
}

/// Panics when a source of example `name` (the library's `src/`, `examples/NAME.rs`,
/// `examples/NAME/`) is newer than its binary `path`: `cargo test --test NAME` builds no
/// example, so a test run that way would silently drive the previous build (`cargo test`
/// without `--test` and `cargo build --examples` rebuild them).
fn assert_fresh(path: &std::path::Path, name: &str) {
    let built = std::fs::metadata(path).and_then(|m| m.modified());
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = [Some(manifest), manifest.parent()]
        .into_iter()
        .flatten()
        .find(|d| d.join("examples").join("signal.rs").is_file());
    let (Ok(built), Some(root)) = (built, root) else {
        return;
    };
    let main = root.join("examples").join(format!("{name}.rs"));
    let main = std::fs::metadata(&main)
        .and_then(|m| m.modified())
        .map(|t| (t, main));
    let newer = [root.join("src"), root.join("examples").join(name)]
        .iter()
        .filter_map(|d| newest_rs(d))
        .chain(main.ok())
        .find(|(t, _)| *t > built);
    if let Some((_, file)) = newer {
        panic!(
            "{} is older than {}: run `cargo build --examples` (or `cargo test` without --test)",
            path.display(),
            file.display()
        );
    }
}

/// The newest `.rs` file under `dir`, with its modification time.
fn newest_rs(dir: &std::path::Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let found = if p.is_dir() {
            newest_rs(&p)
        } else if p.extension().is_some_and(|e| e == "rs") {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, p))
        } else {
            None
        };
        if let Some(f) = found {
            if newest.as_ref().is_none_or(|n| f.0 > n.0) {
                newest = Some(f);
            }
        }
    }
    newest
}

/// `aura --engine <signal> --json ARGS…`.
pub fn aura(args: &[&str]) -> Command {
    let mut c = Command::new(example("aura"));
    c.arg("--engine")
        .arg(example("signal"))
        .arg("--json")
        .args(args);
    c
}

/// A child process whose stdout lines and stderr text are collected by threads. Dropping it
/// kills and reaps the child, so a failing test leaves nothing behind.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line, or `None` at EOF or at the deadline.
    pub fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.stdout.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next JSON event on stdout matching `pred`; panics (with the output so far) if none
    /// arrives before the deadline.
    pub fn expect_event(
        &mut self,
        deadline: Instant,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        while let Some(line) = self.next_line(deadline) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if pred(&v) {
                return v;
            }
        }
        panic!(
            "no {what} event before the deadline\n--- stdout of {}:\n{}\n--- stderr:\n{}",
            self.what,
            self.stdout.join("\n"),
            self.stderr()
        );
    }

    /// Waits for the exit (reading the rest of stdout); kills the child and panics at the
    /// deadline.
    pub fn wait(&mut self, deadline: Instant) -> ExitStatus {
        while self.next_line(deadline).is_some() {}
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(30)); // let the readers finish
                while let Ok(line) = self.lines.try_recv() {
                    self.stdout.push(line);
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit in time\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.what,
                    self.stdout.join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every stdout line that parses as JSON.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A description for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "--- stdout of {}:\n{}\n--- stderr:\n{}",
            self.what,
            self.stdout.join("\n"),
            self.stderr()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a positive pid we were told about; no memory is involved.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// Whether process `pid` no longer runs (absent, or a zombie waiting to be reaped).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits until `pid` is gone; false at the timeout.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    is_gone(pid)
}

/// The problems found in a demo summary (empty: the run checks out). `rate_tolerance` is the
/// allowed relative error of the transport's advance vs wall time.
pub fn demo_problems(s: &Value, rate_tolerance: f64) -> Vec<String> {
    let mut p = Vec::new();
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let sent = n(&s["commands_sent"]);
    if !(20..10_000).contains(&sent) {
        p.push(format!("commands_sent {sent}"));
    }
    if n(&s["acks"]) + n(&s["lost"]) != sent || n(&s["errors"]) != 0 || n(&s["unanswered"]) != 0 {
        p.push(format!(
            "not every command acknowledged: sent {sent}, acks {}, errors {}, lost {}, unanswered {}",
            s["acks"], s["errors"], s["lost"], s["unanswered"]
        ));
    }
    let m = &s["meters"];
    if n(&m["playing_frames"]) < 10
        || n(&m["playing_silent_frames"]) != 0
        || f(&m["playing_peak_min"]).is_nan()
        || f(&m["playing_peak_min"]) <= 0.1
    {
        p.push(format!("meters while playing: {m}"));
    }
    if n(&m["stopped_frames"]) < 5
        || n(&m["stopped_nonzero_frames"]) != 0
        || f(&m["stopped_peak_max"]) != 0.0
    {
        p.push(format!("meters while stopped: {m}"));
    }
    let t = &s["transport"];
    let ratio = f(&t["rate_ratio"]);
    if !((1.0 - rate_tolerance)..=(1.0 + rate_tolerance)).contains(&ratio)
        || f(&t["playing_wall_s"]) < 1.0
    {
        p.push(format!("transport rate vs the sample rate: {t}"));
    }
    let target = n(&t["seek_target"]);
    let after = n(&t["position_after_seek"]);
    if after < target || after > target + n(&t["sample_rate"]) {
        p.push(format!("seek not seen: {t}"));
    }
    p
}

/// The `telemetry` objects `aura watch` printed (`cmd`: an `aura … --json watch …` command),
/// each with the line's `t` (seconds since the watch began) added, after it exited successfully within 20 s and its engine exited by itself with status 0 (so
/// a sanitizer report in the engine fails the caller).
pub fn watch_frames(cmd: &mut Command) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Proc::spawn(cmd);
    assert!(p.wait(deadline).success(), "{}", p.dump());
    let events = p.events();
    let stopped = events.iter().find(|e| e["event"] == "engine_stopped");
    let how = stopped.and_then(|e| e["how"].as_str()).unwrap_or_default();
    assert!(
        how.starts_with("exited by itself") && how.contains("exit status: 0"),
        "{how:?}\n{}",
        p.dump()
    );
    events
        .into_iter()
        .filter(|e| e["event"] == "telemetry")
        .map(|e| {
            let mut f = e["telemetry"].clone();
            f["t"] = e["t"].clone();
            f
        })
        .collect()
}

/// Whether a `spectrum` line of `aura watch` peaks within one bin of `hz` at `db` ± 1 dB.
pub fn spectrum_peaks_at(f: &Value, hz: f64, db: f64) -> bool {
    let at = f["peak_hz"].as_f64().unwrap_or(f64::NAN);
    let level = f["peak_db"].as_f64().unwrap_or(f64::NAN);
    (at - hz).abs() <= f["hz_per_bin"].as_f64().unwrap_or(0.0) && (level - db).abs() <= 1.0
}

/// The test tone both example engines put on tap 2: 1 kHz at amplitude 0.5.
pub const TEST_TONE: (f64, f64) = (1000.0, -6.02);

/// Checks `aura watch` frames of a tap carrying a sine of amplitude 0.5 at `hz`: at least three
/// 1024-bin spectra (attachments) of that tap peaking there at -6.02 dBFS, and a scope of
/// ±0.5. Panics with the frames otherwise.
pub fn assert_sine_on_tap(frames: &[Value], tap: u64, hz: f64) {
    let spectra: Vec<&Value> = frames.iter().filter(|f| f["name"] == "spectrum").collect();
    assert!(spectra.len() >= 3, "{frames:?}");
    for f in &spectra {
        assert_eq!(
            (f["tap"].as_u64(), f["bins"].as_u64()),
            (Some(tap), Some(1024))
        );
        assert_eq!(f["attachment"], true);
        assert!(spectrum_peaks_at(f, hz, TEST_TONE.1), "{f}");
    }
    let scope = frames
        .iter()
        .find(|f| f["name"] == "scope")
        .expect("a scope frame");
    let (lo, hi) = (
        scope["min"].as_f64().unwrap(),
        scope["max"].as_f64().unwrap(),
    );
    assert!(
        (hi - 0.5).abs() < 0.01 && (lo + 0.5).abs() < 0.01,
        "{scope}"
    );
}

/// The `missed` counts of the analysis frames `aura watch --tap 2` printed when it subscribed to
/// `engine` (a command line, run here with `--port 0 --no-rt`) only after the engine had run for
/// `idle` with nobody watching: every `scope`/`spectrum` frame's (name, missed).
pub fn missed_after_idle(engine: &str, idle: Duration) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut e = Proc::spawn(Command::new(engine).args(["--port", "0", "--no-rt"]));
    let announced = loop {
        let line = e
            .next_line(deadline)
            .unwrap_or_else(|| panic!("no LOOPHOLE_LISTEN\n{}", e.dump()));
        if let Some(json) = line.strip_prefix("LOOPHOLE_LISTEN ") {
            break serde_json::from_str::<Value>(json).expect("announcement JSON");
        }
    };
    let addr = format!("127.0.0.1:{}", announced["port"]);
    std::thread::sleep(idle);
    let mut w = Proc::spawn(
        Command::new(example("aura"))
            .args(["--connect", &addr, "--json", "watch"])
            .args(["--seconds", "1", "--rate", "10", "--tap", "2"]),
    );
    assert!(w.wait(deadline).success(), "{}", w.dump());
    w.events()
        .into_iter()
        .filter(|v| v["event"] == "telemetry")
        .map(|v| v["telemetry"].clone())
        .filter(|f| f["name"] == "scope" || f["name"] == "spectrum")
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["missed"].as_u64().unwrap(),
            )
        })
        .collect()
}

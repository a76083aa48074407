//! The engine child process: finding the binary, spawning it with a fresh session token,
//! discovering its port from the announcement line, and stopping it without leaving an orphan.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loophole_ipc::config::TOKEN_ENV;
use loophole_ipc::net::Announcement;

use crate::sys;

/// How long a starting engine has to print its announcement line.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the engine's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 20;

/// What to run: the `signal` binary and extra arguments.
#[derive(Clone, Debug)]
pub struct EngineSpec {
    /// Path of the engine binary.
    pub path: PathBuf,
    /// Extra arguments (aura adds `--supervisor-pid` itself).
    pub args: Vec<String>,
    /// Copy the engine's stderr lines to ours, prefixed.
    pub echo_stderr: bool,
}

/// Why an engine could not be started.
#[derive(Debug)]
pub enum StartError {
    /// The binary could not be executed.
    Spawn(std::io::Error),
    /// It exited before printing its announcement line.
    Exited {
        status: Option<ExitStatus>,
        stderr: Vec<String>,
    },
    /// No announcement line within the timeout (the engine was killed).
    NoAnnouncement,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot run the engine: {e}"),
            Self::Exited { status, stderr } => {
                match status.and_then(|s| s.code()) {
                    Some(c) => write!(f, "the engine exited with status {c}")?,
                    None => write!(f, "the engine died")?,
                }
                f.write_str(" before announcing its port")?;
                if stderr.is_empty() {
                    return Ok(());
                }
                f.write_str("; its last words:")?;
                stderr.iter().try_for_each(|l| write!(f, "\n    {l}"))
            }
            Self::NoAnnouncement => write!(
                f,
                "the engine printed no announcement line within {} s",
                ANNOUNCE_TIMEOUT.as_secs()
            ),
        }
    }
}

/// A running engine child.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    announcement: Announcement,
    exited: Option<ExitStatus>,
}

impl EngineProcess {
    /// Spawns the engine with `token` in its environment (never on the command line), in its own
    /// process group (a terminal's Ctrl-C reaches aura, which then stops the engine politely),
    /// and waits for its announcement line.
    pub fn spawn(spec: &EngineSpec, token: &str) -> Result<Self, StartError> {
        let mut cmd = Command::new(&spec.path);
        cmd.arg("--supervisor-pid")
            .arg(std::process::id().to_string())
            .args(&spec.args)
            .env(TOKEN_ENV, token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sys::prepare_engine(&mut cmd);
        let mut child = cmd.spawn().map_err(StartError::Spawn)?;
        if let Err(e) = sys::adopt_engine(&child) {
            eprintln!("aura: WARNING: the engine may outlive aura: {e}");
        }
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let pid = child.id();
        forward_stderr(&mut child, pid, Arc::clone(&tail), spec.echo_stderr);
        let announced = read_announcement(&mut child);
        match wait_announcement(&mut child, &announced) {
            Some(announcement) => Ok(Self {
                child,
                announcement,
                exited: None,
            }),
            None => Err(failed_start(child, &tail)),
        }
    }

    /// The engine's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The announcement it printed.
    pub fn announcement(&self) -> &Announcement {
        &self.announcement
    }

    /// The exit status if the engine has exited (reaps it). Never blocks.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the engine to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Makes sure the engine is gone: waits `grace` for it to exit on its own (after
    /// `engine.shutdown`), then SIGTERM and 2 s, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        if let Some(s) = self.wait_exit(grace) {
            return Stopped::Exited(s);
        }
        let _ = sys::terminate(self.pid());
        if let Some(s) = self.wait_exit(Duration::from_secs(2)) {
            return Stopped::Terminated(s);
        }
        let _ = self.child.kill();
        Stopped::Killed(self.child.wait().ok())
    }
}

impl Drop for EngineProcess {
    /// Last resort (aura is unwinding): never leave the engine behind.
    fn drop(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How [`EngineProcess::stop`] ended the engine.
#[derive(Clone, Copy, Debug)]
pub enum Stopped {
    /// It exited by itself (no signal was needed), within the grace period.
    Exited(ExitStatus),
    /// It exited after SIGTERM.
    Terminated(ExitStatus),
    /// It had to be killed.
    Killed(Option<ExitStatus>),
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(s) => write!(f, "exited by itself ({s})"),
            Self::Terminated(s) => write!(f, "exited after SIGTERM ({s})"),
            Self::Killed(s) => match s {
                Some(s) => write!(f, "did not stop; killed with SIGKILL ({s})"),
                None => f.write_str("did not stop; killed with SIGKILL"),
            },
        }
    }
}

/// Reads the child's stdout on a thread: the first announcement line goes to the channel; the
/// rest is read and dropped until EOF so the engine never blocks on a full pipe.
fn read_announcement(child: &mut Child) -> mpsc::Receiver<Announcement> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Ok(a) = Announcement::parse_line(&line) {
                    let _ = tx.send(a);
                    break;
                }
                line.clear();
            }
            drop(tx);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
    }
    rx
}

fn wait_announcement(child: &mut Child, rx: &mpsc::Receiver<Announcement>) -> Option<Announcement> {
    let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(a) => return Some(a),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return rx.try_recv().ok();
                }
            }
        }
    }
    None
}

/// The engine did not announce: collect its exit status (killing it if it still runs) and the
/// last lines of its stderr.
fn failed_start(mut child: Child, tail: &Mutex<VecDeque<String>>) -> StartError {
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        status = child.try_wait().ok().flatten();
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = status.is_none();
    if killed {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(50)); // let the stderr thread catch the last lines
    let stderr: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    if killed && stderr.is_empty() {
        return StartError::NoAnnouncement;
    }
    StartError::Exited { status, stderr }
}

/// Copies the engine's stderr to ours (prefixed with its pid) and keeps the last lines.
fn forward_stderr(child: &mut Child, pid: u32, tail: Arc<Mutex<VecDeque<String>>>, echo: bool) {
    let Some(err) = child.stderr.take() else {
        return;
    };
    std::thread::spawn(move || {
        let mut reader = BufReader::new(err);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let text = line.trim_end().to_owned();
            line.clear();
            if echo {
                eprintln!("  [engine {pid}] {text}");
            }
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(text);
            }
        }
    });
}

/// 32 random bytes from the kernel, as 64 hex digits: the session token.
pub fn fresh_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Finds the engine binary: `--engine PATH`, else `signal` next to the aura executable.
///
/// Under `cargo run` (from this source checkout) aura first runs `cargo build --example signal`
/// in its own profile, so the engine is never missing or stale; otherwise it builds it only when
/// it is missing and the checkout is there.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(format!("--engine {}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate aura itself: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join("signal");
    let under_cargo_run = std::env::var_os("CARGO_MANIFEST_DIR")
        .is_some_and(|d| Path::new(&d) == Path::new(env!("CARGO_MANIFEST_DIR")));
    if candidate.is_file() && !under_cargo_run {
        return Ok(candidate);
    }
    let hint = format!(
        "the engine binary was not found next to aura ({}). Build it with \
         `cargo build --release --examples` (or pass --engine PATH)",
        candidate.display()
    );
    match build_engine(dir, candidate.is_file()) {
        Ok(()) if candidate.is_file() => Ok(candidate),
        Ok(()) => Err(hint),
        Err(why) => Err(format!("{hint}; building it failed: {why}")),
    }
}

/// `cargo build --example signal` in the profile of `examples_dir` (`target/<profile>/examples`).
fn build_engine(examples_dir: &Path, exists: bool) -> Result<(), String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    if !manifest.is_file() {
        return Err("not running from a source checkout".into());
    }
    let profile_dir = examples_dir
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile: Vec<&str> = match profile_dir {
        "debug" => vec![],
        "release" => vec!["--release"],
        other => vec!["--profile", other],
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let command = format!(
        "cargo build {}--example signal",
        profile.iter().map(|p| format!("{p} ")).collect::<String>()
    );
    if exists {
        eprintln!("aura: running under cargo: `{command}` (the engine is up to date after it)");
    } else {
        eprintln!("aura: the engine (`signal` example) is not built yet; running `{command}`...");
    }
    let status = Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(&profile)
        .args(["--example", "signal"])
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {status}"))
    }
}

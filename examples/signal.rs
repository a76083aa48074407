//! `signal` — an example engine process built on loophole-ipc.
//!
//! A simulated audio device thread calls the engine's block callback on the real schedule
//! (absolute `CLOCK_MONOTONIC` deadlines, `SCHED_FIFO` when granted); the callback drains the
//! commands of the network thread through an [`AudioEndpoint`], renders a small fixed graph
//! (oscillator → gain → meter) with a transport, and publishes meters, transport and health. The
//! main thread is the control thread: graph edits on a model graph, `engine.shutdown`, stop
//! signals and orphaning. Run `signal --help` for the options, node ids and exit codes.
//!
//! Prints exactly one line on stdout — the listen announcement — and everything else on stderr.
#![deny(unsafe_code)]

#[path = "signal/analysis.rs"]
mod analysis;
#[path = "signal/device.rs"]
mod device;
#[path = "signal/dsp.rs"]
mod dsp;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use loophole_ipc::clock;
use loophole_ipc::config::{token_from_env, PortPolicy, TOKEN_ENV};
use loophole_ipc::control::{ControlEndpoint, ControlError, ControlOp};
use loophole_ipc::message::Edge;
use loophole_ipc::net::{BindError, FrameLogConfig, Server};
use loophole_ipc::rt::{bridge, AudioEndpoint, RtConfig, MAX_METER_CHANNELS};

/// Taps: 0 master L, 1 master R, 2 the test tone (see `TAPS` in the help).
const TAPS: usize = 3;
/// Samples per tap ring (1.4 s at 48 kHz): the longest scope window, 256 KiB per tap.
const TAP_CAPACITY: usize = 1 << 16;
/// The test tone's tap.
const TAP_TEST_TONE: usize = 2;

/// Clean exit: `engine.shutdown`, SIGINT/SIGTERM, or the supervisor gone.
const EXIT_OK: i32 = 0;
/// An unexpected failure after start-up (a thread could not be created or panicked).
const EXIT_FAILURE: i32 = 1;
/// Bad command-line arguments.
const EXIT_USAGE: i32 = 2;
/// The server could not start (port in use, range exhausted, address refused, …).
const EXIT_CANNOT_START: i32 = 3;

const HELP: &str = "\
signal — example Loophole engine: a simulated audio device driving a small DSP graph,
controlled over loophole-ipc (TCP loopback).

USAGE:
    signal [OPTIONS]

OPTIONS:
    --port N              Listen on exactly port N (fails with exit code 3 if it is taken).
                          --port 0 asks for an ephemeral port chosen by the OS.
    --port-range A-B      Listen on the first free port of A..=B (1..=65535).
                          Default: an ephemeral port chosen by the OS.
    --host IP             Address to bind. Default 127.0.0.1; ::1 also works. Non-loopback
                          addresses are refused (exit code 3): signal serves only this machine.
    --sample-rate HZ      Sample rate of the simulated device, 8000..=384000. Default 48000.
    --block-size N        Frames per audio callback, 16..=8192. Default 128.
    --channels N          Metered output channels, 1..=512. Default 2.
    --supervisor-pid PID  Exit when this process is gone and no client is connected for 10 s
                          (a supervising UI passes its own pid).
    --connection-file P   Also write the announcement JSON to file P (mode 0600); removed on
                          clean exit. If P cannot be written, signal exits with code 3 and
                          says so, naming P.
    --log-frames PATH     Debugging: log every frame in and out as JSON lines to PATH
                          (bounded to 64 MiB; also LOOPHOLE_FRAME_LOG=PATH).
    --no-rt               Do not ask for real-time scheduling (SCHED_FIFO) for the audio thread.
    --rt-priority N       SCHED_FIFO priority asked for, 1..=99 (clamped further to the
                          system's range). Default 70.
    --device-speed F      Testing aid: the simulated device's clock runs F times real time
                          (0.25..=4; default 1), like a device whose clock drifts.
    -h, --help            Print this help and exit.
    -V, --version         Print the version and exit.

ENVIRONMENT:
    LOOPHOLE_SESSION_TOKEN  Session token clients must present in `hello` (unset or empty: no
                            token). Pass it in the environment, never on the command line.
    LOOPHOLE_FRAME_LOG      Frame log file, as --log-frames (the option wins).

OUTPUT:
    stdout gets exactly one line once the port is bound:
      LOOPHOLE_LISTEN {\"host\":\"127.0.0.1\",\"port\":40123,\"pid\":4242,\"protocol\":1,\"instance\":\"…\"}
    Everything else (status, warnings, errors) goes to stderr.

GRAPH (fixed; `param.set` addresses it):
    node 1  osc    param 0 = frequency, Hz, 1..=20000 (initial 440)
    node 2  gain   param 0 = linear gain, 0..=4 (initial 0.5)
    node 3  meter  no parameters; feeds the `meters` stream (all channels carry the same signal)
    `ramp_ms` is honoured: the value moves linearly, sample by sample, over the ramp.

TAPS (the `scope` and `spectrum` streams; welcome.taps = 3):
    tap 0  master L (the output of node 2, what node 3 meters)
    tap 1  master R (the same signal: the graph is mono)
    tap 2  test tone: a 1000 Hz sine at amplitude 0.5 (-6.02 dBFS), always on
    A worker thread computes the streams off the audio thread (scope: min/max per point over
    the most recent window; spectrum: Hann window, FFT of 2 x bins samples, dBFS with a
    full-scale sine at a bin centre = 0 dB, floor -160). Each tap keeps 65536 samples.
    Errors: unknown node -> unknown_node, unknown param -> unknown_param, value outside the
    range -> out_of_range. The oscillator sounds only while the transport plays; the play
    position advances by the block size on every callback while playing (loops honoured).

    graph.add_node / remove_node / connect / disconnect edit a model graph on the control thread
    that starts as the graph above. Kinds and ports: osc (no input, output 0), gain (input 0,
    output 0), meter (input 0, no output). Checked: node_exists, unknown_kind, unknown_node (an
    end that does not exist), out_of_range (a port the node's kind does not have), unsupported
    (a connection that exists already, one that does not exist for disconnect, one that would
    close a cycle, a self-loop included). The audio graph itself stays fixed: nodes 1-3 and
    their two connections cannot be removed (unsupported); added nodes are validated and
    recorded, not rendered, so `param.set` on them answers unknown_node (docs/specs/ipc/
    envelope.md, section Graph and parameters).

HEALTH:
    engine.health reports xruns (callbacks that ended after their block was due, plus blocks
    dropped when the thread fell more than 4 periods behind) and the DSP load (callback time /
    period).

SIGNALS:
    SIGINT, SIGTERM and the `engine.shutdown` command stop the engine cleanly: answers owed are
    sent, clients get `goodbye shutdown`, the connection file is removed.

EXIT CODES:
    0  clean exit (engine.shutdown, SIGINT/SIGTERM, supervisor gone)
    1  failure after start-up
    2  bad arguments
    3  cannot start the server (port in use, range exhausted, address refused, connection file
       not writable, session token longer than 128 bytes); the reason is printed on stderr and
       no announcement line is printed
";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    host: IpAddr,
    port: PortPolicy,
    sample_rate: u32,
    block_size: u32,
    channels: usize,
    supervisor_pid: Option<u32>,
    connection_file: Option<PathBuf>,
    log_frames: Option<PathBuf>,
    realtime: bool,
    rt_priority: i32,
    device_speed: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: PortPolicy::Ephemeral,
            sample_rate: 48_000,
            block_size: 128,
            channels: 2,
            supervisor_pid: None,
            connection_file: None,
            log_frames: None,
            realtime: true,
            rt_priority: 70,
            device_speed: 1.0,
        }
    }
}

enum Parsed {
    Run(Options),
    Help,
    Version,
}

fn number<T>(opt: &str, v: &str, range: (T, T)) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = v.parse().map_err(|_| {
        // An integer too large (or too small) for the type: say so, not "not a number".
        let digits = v.strip_prefix('-').unwrap_or(v);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            format!("{opt}: {v} is outside {}..={}", range.0, range.1)
        } else if v
            .parse::<f64>()
            .is_ok_and(|x| x.is_finite() && x.fract() != 0.0)
        {
            format!("{opt}: `{v}` is not a whole number")
        } else if v.parse::<f64>().is_ok_and(f64::is_finite) {
            format!("{opt}: write `{v}` as digits only")
        } else {
            format!("{opt}: `{v}` is not a number")
        }
    })?;
    // Written so that NaN (which compares false with everything) is outside too.
    if !(n >= range.0 && n <= range.1) {
        return Err(format!("{opt}: {v} is outside {}..={}", range.0, range.1));
    }
    Ok(n)
}

/// `--port N`: 0 is the usual "any free port" (an ephemeral port), like scsynth's `-u 0`.
fn port(v: &str) -> Result<PortPolicy, String> {
    Ok(match number("--port", v, (0u16, u16::MAX))? {
        0 => PortPolicy::Ephemeral,
        n => PortPolicy::Fixed(n),
    })
}

/// Checks that the connection file can be created where asked, before anything is bound, so the
/// failure names the file and nothing is bound yet (the server's own error names the setting,
/// not the path, and comes after the bind). Creates and
/// removes a probe file beside it, as the server's atomic write does with its temporary file.
fn check_connection_file(path: &std::path::Path) -> Result<(), String> {
    let why =
        |e: std::io::Error| format!("cannot write the connection file {}: {e}", path.display());
    let name = path
        .file_name()
        .ok_or_else(|| why(std::io::ErrorKind::InvalidInput.into()))?;
    let mut probe_name = std::ffi::OsString::from(".");
    probe_name.push(name);
    probe_name.push(format!(".probe.{}", std::process::id()));
    let probe = path.with_file_name(probe_name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(why)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn port_range(v: &str) -> Result<PortPolicy, String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("--port-range: `{v}` is not A-B"))?;
    let first = number("--port-range", a, (1u16, u16::MAX))?;
    let last = number("--port-range", b, (1u16, u16::MAX))?;
    if last < first {
        return Err(format!("--port-range: {last} < {first}"));
    }
    Ok(PortPolicy::Range { first, last })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut o = Options::default();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--port" => o.port = port(&value()?)?,
            "--port-range" => o.port = port_range(&value()?)?,
            "--host" => {
                let v = value()?;
                o.host = v
                    .parse()
                    .map_err(|_| format!("--host: `{v}` is not an IP address"))?;
            }
            "--sample-rate" => o.sample_rate = number(&name, &value()?, (8_000, 384_000))?,
            "--block-size" => o.block_size = number(&name, &value()?, (16, 8_192))?,
            "--channels" => o.channels = number(&name, &value()?, (1, MAX_METER_CHANNELS))?,
            "--supervisor-pid" => {
                o.supervisor_pid = Some(number(&name, &value()?, (1, u32::MAX))?);
            }
            "--connection-file" => o.connection_file = Some(PathBuf::from(value()?)),
            "--log-frames" => o.log_frames = Some(PathBuf::from(value()?)),
            "--no-rt" => o.realtime = false,
            "--rt-priority" => o.rt_priority = number(&name, &value()?, (1, 99))?,
            "--device-speed" => o.device_speed = number(&name, &value()?, (0.25, 4.0))?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Parsed::Run(o))
}

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return EXIT_OK;
        }
        Ok(Parsed::Version) => {
            println!("signal {}", env!("CARGO_PKG_VERSION"));
            return EXIT_OK;
        }
        Err(msg) => {
            eprintln!("signal: {msg}\nTry `signal --help`.");
            return EXIT_USAGE;
        }
    };
    // Before any thread exists: every thread spawned from here on has SIGINT/SIGTERM blocked,
    // so only this (control) thread handles them.
    device::block_stop_signals();
    let _ = clock::now_ns(); // fix the clock's epoch outside the audio callback
    let mut rt = RtConfig::default();
    rt.sample_rate = opts.sample_rate;
    rt.meter_channels = opts.channels;
    let rt = rt.with_taps(TAPS, TAP_CAPACITY);
    let (audio, mut net) = bridge(&rt);
    let taps = net.take_taps().expect("taps configured");
    if let Some(path) = &opts.connection_file {
        if let Err(msg) = check_connection_file(path) {
            eprintln!("signal: cannot start: {msg}");
            return EXIT_CANNOT_START;
        }
    }
    let token = match token_from_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("signal: cannot start: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let has_token = token.is_some();
    let mut builder = Server::builder();
    let worker = match builder.analysis_worker(TAPS as u16) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("signal: cannot start: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let spawned = builder
        .bind(opts.host)
        .port(opts.port)
        .token(token)
        .sample_rate(opts.sample_rate)
        .block_size(opts.block_size)
        .supervisor_pid(opts.supervisor_pid)
        .connection_file(opts.connection_file.clone())
        .frame_log(
            opts.log_frames
                .clone()
                .map(FrameLogConfig::new)
                .or_else(FrameLogConfig::from_env),
        )
        .engine_name(format!("signal/{}", env!("CARGO_PKG_VERSION")))
        .spawn(net);
    let (server, control) = match spawned {
        Ok(pair) => pair,
        // The library's text suggests allowing it (an embedder can); signal has no such option.
        Err(BindError::NonLoopback { ip }) => {
            eprintln!(
                "signal: cannot start: refusing to bind {ip}: not a loopback address; signal \
                 listens only on 127.0.0.1 or ::1, so that only processes on this machine can \
                 reach it (docs/specs/ipc/ports.md §1)"
            );
            return EXIT_CANNOT_START;
        }
        Err(e) => {
            eprintln!("signal: cannot start: {e}");
            return EXIT_CANNOT_START;
        }
    };
    eprintln!(
        "signal: listening on {} (instance {}, pid {}), {} Hz, {} frames/block, {} meter channels, {}",
        server.local_addr(),
        server.announcement().instance,
        std::process::id(),
        opts.sample_rate,
        opts.block_size,
        opts.channels,
        if has_token {
            "session token required".to_owned()
        } else {
            format!("no session token (set {TOKEN_ENV} to require one)")
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let analyzer = analysis::Analyzer::new(taps, opts.sample_rate);
    let analysis_stop = Arc::clone(&stop);
    let analysis_thread = std::thread::Builder::new()
        .name("signal-analysis".into())
        .spawn(move || analyzer.run(worker, &analysis_stop));
    if let Err(e) = &analysis_thread {
        eprintln!("signal: cannot start the analysis thread: {e}");
        server.shutdown();
        return EXIT_FAILURE;
    }
    let (rt_status, rt_status_rx) = std::sync::mpsc::channel();
    let audio_thread = match spawn_audio(&opts, audio, Arc::clone(&stop), rt_status) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("signal: cannot start the audio thread: {e}");
            server.shutdown();
            return EXIT_FAILURE;
        }
    };
    // Status lines first, then the announcement: a supervisor that starts drawing once it has
    // the port is not interrupted by the engine's start-up messages.
    if let Ok(status) = rt_status_rx.recv_timeout(Duration::from_secs(1)) {
        eprintln!("{status}");
    }
    announce(&server.announcement().to_line());
    device::unblock_and_catch_stop_signals();

    let reason = control_loop(&control);
    eprintln!("signal: shutting down ({reason})");
    // Network first, while the audio thread still answers: owed answers go out before goodbye.
    server.shutdown();
    stop.store(true, Ordering::Relaxed);
    if let Ok(t) = analysis_thread {
        let _ = t.join();
    }
    match audio_thread.join() {
        Ok(stats) => {
            eprintln!(
                "signal: stopped after {} callbacks ({} blocks dropped)",
                stats.callbacks, stats.dropped
            );
            EXIT_OK
        }
        Err(_) => {
            eprintln!("signal: the audio thread panicked");
            EXIT_FAILURE
        }
    }
}

/// The one line on stdout.
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Starts the simulated device thread; the engine callback runs on it.
fn spawn_audio(
    opts: &Options,
    mut audio: AudioEndpoint,
    stop: Arc<AtomicBool>,
    rt_status: std::sync::mpsc::Sender<String>,
) -> std::io::Result<std::thread::JoinHandle<device::DeviceStats>> {
    let cfg = device::DeviceConfig {
        sample_rate: opts.sample_rate,
        block_size: opts.block_size,
        realtime: opts.realtime,
        rt_priority: opts.rt_priority,
        speed: opts.device_speed,
    };
    let channels = opts.channels;
    std::thread::Builder::new()
        .name("signal-audio".into())
        .spawn(move || {
            let _ = rt_status.send(realtime(&cfg));
            let mut graph = dsp::Graph::new(cfg.sample_rate, cfg.block_size as usize);
            let mut tone = dsp::TestTone::new(cfg.sample_rate, cfg.block_size as usize);
            device::run(&cfg, &stop, |slot| {
                callback(
                    &mut audio,
                    &mut graph,
                    &mut tone,
                    cfg.block_size,
                    channels,
                    slot,
                );
            })
        })
}

/// Asks for SCHED_FIFO (unless `--no-rt`); returns the line saying whether it was granted.
fn realtime(cfg: &device::DeviceConfig) -> String {
    if !cfg.realtime {
        return "signal: real-time scheduling not requested (--no-rt)".into();
    }
    match device::request_realtime(cfg.rt_priority) {
        Ok(granted) => format!("signal: audio thread runs {granted}"),
        Err(e) => format!(
            "signal: WARNING: real-time scheduling (SCHED_FIFO) was NOT granted: {e}. The audio \
             thread runs at normal priority and may xrun under load. Grant it with an rtprio \
             limit (e.g. `ulimit -r 95`, /etc/security/limits.conf) or CAP_SYS_NICE."
        ),
    }
}

/// The engine's audio callback: one block. Wait-free, no allocation, no lock, no system call.
fn callback(
    audio: &mut AudioEndpoint,
    graph: &mut dsp::Graph,
    tone: &mut dsp::TestTone,
    frames: u32,
    channels: usize,
    slot: device::Slot,
) {
    audio.begin_callback(clock::now_ns(), frames);
    for _ in 0..slot.dropped {
        audio.report_xrun();
    }
    audio.drain(|cmd| graph.apply(&cmd.op));
    let levels = graph.render(frames as usize);
    for ch in 0..channels {
        audio.publish_levels(ch, levels.peak, levels.sum_sq, u64::from(frames));
    }
    // Taps: wait-free stores into fixed rings (the analysis worker reads them). Every tap is
    // published every callback, so a tap's sample index is the engine's sample clock.
    let block = graph.block(frames as usize);
    for tap in 0..TAP_TEST_TONE {
        let _ = audio.publish_tap(tap, block);
    }
    let _ = audio.publish_tap(TAP_TEST_TONE, tone.render(frames as usize));
    audio.publish_transport(graph.transport());
    if device::mono_ns() > slot.due_ns {
        audio.report_xrun();
    }
    audio.end_callback(clock::now_ns());
}

/// The control thread's loop; returns why the engine stops.
fn control_loop(control: &ControlEndpoint) -> String {
    let mut model = ModelGraph::new();
    loop {
        if let Some(sig) = device::stop_signal() {
            return device::signal_name(sig).to_owned();
        }
        let req = match control.recv_timeout(Duration::from_millis(50)) {
            Ok(req) => req,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return "network thread stopped".into(),
        };
        let result = match req.op {
            ControlOp::Shutdown => {
                let _ = control.reply(req.ticket, Ok(()));
                return "engine.shutdown".into();
            }
            ControlOp::Orphaned => return "supervisor gone and no client came back".into(),
            op => model.apply(&op),
        };
        if control.reply(req.ticket, result).is_err() {
            return "network thread stopped".into();
        }
    }
}

/// The control thread's model of the graph: what graph edits are checked against.
///
/// The audio thread renders a fixed graph (1 osc → 2 gain → 3 meter) and `param.set` addresses
/// it alone; this model starts as that graph and takes every edit envelope.md allows, except
/// that what the audio thread renders (nodes 1–3 and their two connections) cannot be removed
/// (`unsupported`), so the model never says a rendered node is gone while `param.set` still
/// reaches it. Nodes added here are checked and recorded, not rendered.
#[derive(Debug)]
struct ModelGraph {
    nodes: BTreeMap<u32, Kind>,
    edges: BTreeSet<(u32, u16, u32, u16)>,
}

/// A node kind of the model: its name and how many input and output ports it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kind {
    name: &'static str,
    inputs: u16,
    outputs: u16,
}

impl ModelGraph {
    const KINDS: [Kind; 3] = [
        Kind {
            name: "osc",
            inputs: 0,
            outputs: 1,
        },
        Kind {
            name: "gain",
            inputs: 1,
            outputs: 1,
        },
        Kind {
            name: "meter",
            inputs: 1,
            outputs: 0,
        },
    ];
    /// The nodes the audio thread renders, with their kinds (indices into `KINDS`).
    const RENDERED: [(u32, usize); 3] = [(1, 0), (2, 1), (3, 2)];
    /// The connections the audio thread renders.
    const RENDERED_EDGES: [(u32, u16, u32, u16); 2] = [(1, 0, 2, 0), (2, 0, 3, 0)];

    /// The fixed audio graph: 1 osc → 2 gain → 3 meter.
    fn new() -> Self {
        let nodes = Self::RENDERED
            .iter()
            .map(|&(id, k)| (id, Self::KINDS[k]))
            .collect();
        let edges = Self::RENDERED_EDGES.into_iter().collect();
        Self { nodes, edges }
    }

    fn apply(&mut self, op: &ControlOp) -> Result<(), ControlError> {
        match op {
            ControlOp::AddNode(a) => {
                if self.nodes.contains_key(&a.node) {
                    return Err(ControlError::NodeExists);
                }
                let kind = Self::KINDS
                    .into_iter()
                    .find(|k| k.name == a.kind.as_str())
                    .ok_or(ControlError::UnknownKind)?;
                self.nodes.insert(a.node, kind);
                Ok(())
            }
            ControlOp::RemoveNode { node } => {
                if !self.nodes.contains_key(node) {
                    return Err(ControlError::UnknownNode);
                }
                if Self::RENDERED.iter().any(|&(id, _)| id == *node) {
                    return Err(ControlError::Unsupported);
                }
                self.nodes.remove(node);
                self.edges.retain(|e| e.0 != *node && e.2 != *node);
                Ok(())
            }
            ControlOp::Connect(e) => {
                self.check_ends(e)?;
                if self.edges.contains(&key(e)) || self.reaches(e.to, e.from) {
                    return Err(ControlError::Unsupported); // exists, or would close a cycle
                }
                self.edges.insert(key(e));
                Ok(())
            }
            ControlOp::Disconnect(e) => {
                self.check_ends(e)?;
                if !self.edges.contains(&key(e)) || Self::RENDERED_EDGES.contains(&key(e)) {
                    return Err(ControlError::Unsupported); // no such connection, or rendered
                }
                self.edges.remove(&key(e));
                Ok(())
            }
            _ => Err(ControlError::Unsupported),
        }
    }

    /// Both ends exist (`unknown_node`) and have the ports named (`out_of_range`).
    fn check_ends(&self, e: &Edge) -> Result<(), ControlError> {
        let (Some(from), Some(to)) = (self.nodes.get(&e.from), self.nodes.get(&e.to)) else {
            return Err(ControlError::UnknownNode);
        };
        if e.from_port >= from.outputs || e.to_port >= to.inputs {
            return Err(ControlError::OutOfRange);
        }
        Ok(())
    }

    /// Whether a path of connections leads from `start` to `goal` (a node reaches itself).
    fn reaches(&self, start: u32, goal: u32) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            if n == goal {
                return true;
            }
            if seen.insert(n) {
                todo.extend(self.edges.iter().filter(|e| e.0 == n).map(|e| e.2));
            }
        }
        false
    }
}

fn key(e: &Edge) -> (u32, u16, u32, u16) {
    (e.from, e.from_port, e.to, e.to_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loophole_ipc::message::AddNode;

    fn edge(from: u32, from_port: u16, to: u32, to_port: u16) -> Edge {
        Edge {
            from,
            from_port,
            to,
            to_port,
        }
    }

    fn add(g: &mut ModelGraph, node: u32, kind: &str) -> Result<(), ControlError> {
        g.apply(&ControlOp::AddNode(AddNode {
            node,
            kind: kind.try_into().unwrap(),
        }))
    }

    #[test]
    fn transport_position_clamps_at_2_pow_53_minus_1() {
        use loophole_ipc::message::MAX_SAFE_INTEGER;
        use loophole_ipc::rt::RtOp;
        let mut g = dsp::Graph::new(48_000, 128);
        g.apply(&RtOp::Seek {
            position: MAX_SAFE_INTEGER - 100,
        });
        g.apply(&RtOp::Play);
        for _ in 0..8 {
            g.render(128);
        }
        assert_eq!(g.transport().position, MAX_SAFE_INTEGER);
        // Below the limit it advances normally (the clamp is not a freeze).
        g.apply(&RtOp::Seek { position: 0 });
        g.render(128);
        assert_eq!(g.transport().position, 128);
    }

    #[test]
    fn port_zero_is_ephemeral() {
        assert_eq!(port("0"), Ok(PortPolicy::Ephemeral));
        assert_eq!(port("4242"), Ok(PortPolicy::Fixed(4242)));
        assert!(port("65536").is_err());
    }

    #[test]
    fn connection_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("signal-cf-{}", std::process::id()));
        let missing = dir.join("no-such-dir").join("conn.json");
        let err = check_connection_file(&missing).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("conn.json");
        assert_eq!(check_connection_file(&ok), Ok(()));
        assert!(!ok.exists(), "the probe must leave nothing behind");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn graph_edits_errors_md_names_are_refused() {
        let mut g = ModelGraph::new();
        add(&mut g, 10, "gain").unwrap();
        add(&mut g, 11, "gain").unwrap();
        let connect = |g: &mut ModelGraph, e| g.apply(&ControlOp::Connect(e));
        let disconnect = |g: &mut ModelGraph, e| g.apply(&ControlOp::Disconnect(e));
        // Positive controls: the same checks let valid edits through.
        assert_eq!(connect(&mut g, edge(10, 0, 11, 0)), Ok(()));
        assert_eq!(connect(&mut g, edge(1, 0, 10, 0)), Ok(()));
        // Connecting the same ports twice.
        assert_eq!(
            connect(&mut g, edge(10, 0, 11, 0)),
            Err(ControlError::Unsupported)
        );
        // A port the node does not have (gain has one input and one output; osc no input).
        assert_eq!(
            connect(&mut g, edge(10, 0, 2, 65535)),
            Err(ControlError::OutOfRange)
        );
        assert_eq!(
            connect(&mut g, edge(11, 1, 2, 0)),
            Err(ControlError::OutOfRange)
        );
        assert_eq!(
            connect(&mut g, edge(10, 0, 1, 0)),
            Err(ControlError::OutOfRange)
        );
        // A self-loop and a 2-node cycle.
        assert_eq!(
            connect(&mut g, edge(10, 0, 10, 0)),
            Err(ControlError::Unsupported)
        );
        assert_eq!(
            connect(&mut g, edge(11, 0, 10, 0)),
            Err(ControlError::Unsupported)
        );
        // Unknown ends before ports.
        assert_eq!(
            connect(&mut g, edge(99, 9, 10, 0)),
            Err(ControlError::UnknownNode)
        );
        // Disconnecting a connection that does not exist, then one that does.
        assert_eq!(
            disconnect(&mut g, edge(11, 0, 2, 0)),
            Err(ControlError::Unsupported)
        );
        assert_eq!(disconnect(&mut g, edge(10, 0, 11, 0)), Ok(()));
        assert_eq!(
            disconnect(&mut g, edge(10, 0, 11, 0)),
            Err(ControlError::Unsupported)
        );
    }

    #[test]
    fn what_the_audio_thread_renders_cannot_be_removed() {
        let mut g = ModelGraph::new();
        for node in [1, 2, 3] {
            let r = g.apply(&ControlOp::RemoveNode { node });
            assert_eq!(r, Err(ControlError::Unsupported), "node {node}");
        }
        let r = g.apply(&ControlOp::Disconnect(edge(1, 0, 2, 0)));
        assert_eq!(r, Err(ControlError::Unsupported));
        // A model-only node can be removed, with its connections.
        add(&mut g, 10, "meter").unwrap();
        g.apply(&ControlOp::Connect(edge(2, 0, 10, 0))).unwrap();
        assert_eq!(g.apply(&ControlOp::RemoveNode { node: 10 }), Ok(()));
        assert!(!g.edges.iter().any(|e| e.2 == 10));
        assert_eq!(
            g.apply(&ControlOp::RemoveNode { node: 10 }),
            Err(ControlError::UnknownNode)
        );
    }
}

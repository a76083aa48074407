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
use loophole_ipc::net::{FrameLogConfig, Server};
use loophole_ipc::rt::{bridge, AudioEndpoint, RtConfig, MAX_METER_CHANNELS};

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
    --port-range A-B      Listen on the first free port of A..=B.
                          Default: an ephemeral port chosen by the OS.
    --host IP             Address to bind. Default 127.0.0.1; ::1 also works. Non-loopback
                          addresses are refused.
    --sample-rate HZ      Sample rate of the simulated device, 8000..=384000. Default 48000.
    --block-size N        Frames per audio callback, 16..=8192. Default 128.
    --channels N          Metered output channels, 1..=64. Default 2.
    --supervisor-pid PID  Exit when this process is gone and no client is connected for 10 s
                          (a supervising UI passes its own pid).
    --connection-file P   Also write the announcement JSON to file P (mode 0600); removed on
                          clean exit.
    --log-frames PATH     Debugging: log every frame in and out as JSON lines to PATH
                          (bounded to 64 MiB; also LOOPHOLE_FRAME_LOG=PATH).
    --no-rt               Do not ask for real-time scheduling (SCHED_FIFO) for the audio thread.
    --rt-priority N       SCHED_FIFO priority asked for, clamped to the system range. Default 70.
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
    Errors: unknown node -> unknown_node, unknown param -> unknown_param, value outside the
    range -> out_of_range. The oscillator sounds only while the transport plays; the play
    position advances by the block size on every callback while playing (loops honoured).

    graph.add_node / remove_node / connect / disconnect edit a model graph on the control thread
    (kinds: osc, gain, meter; errors node_exists, unknown_node, unknown_kind). The audio graph
    itself stays fixed: edits are validated and recorded, not rendered.

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
    3  cannot start the server (port in use, range exhausted, address refused); the reason is
       printed on stderr and no announcement line is printed
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
    let n: T = v
        .parse()
        .map_err(|_| format!("{opt}: `{v}` is not a number"))?;
    if n < range.0 || n > range.1 {
        return Err(format!("{opt}: {v} is outside {}..={}", range.0, range.1));
    }
    Ok(n)
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
            "--port" => o.port = PortPolicy::Fixed(number(&name, &value()?, (1, u16::MAX))?),
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
    let (audio, net) = bridge(&rt);
    let token = token_from_env();
    let has_token = token.is_some();
    let spawned = Server::builder()
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
            device::run(&cfg, &stop, |slot| {
                callback(&mut audio, &mut graph, cfg.block_size, channels, slot);
            })
        })
}

/// Asks for SCHED_FIFO (unless `--no-rt`); returns the line saying whether it was granted.
fn realtime(cfg: &device::DeviceConfig) -> String {
    if !cfg.realtime {
        return "signal: real-time scheduling not requested (--no-rt)".into();
    }
    match device::request_realtime(cfg.rt_priority) {
        Ok(p) => format!("signal: audio thread runs SCHED_FIFO at priority {p}"),
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
#[derive(Debug)]
struct ModelGraph {
    nodes: BTreeMap<u32, String>,
    edges: BTreeSet<(u32, u16, u32, u16)>,
}

impl ModelGraph {
    const KINDS: [&'static str; 3] = ["osc", "gain", "meter"];

    /// The fixed audio graph: 1 osc → 2 gain → 3 meter.
    fn new() -> Self {
        let nodes = [(1, "osc"), (2, "gain"), (3, "meter")]
            .into_iter()
            .map(|(id, k)| (id, k.to_owned()))
            .collect();
        let edges = [(1, 0, 2, 0), (2, 0, 3, 0)].into_iter().collect();
        Self { nodes, edges }
    }

    fn apply(&mut self, op: &ControlOp) -> Result<(), ControlError> {
        match op {
            ControlOp::AddNode(a) if self.nodes.contains_key(&a.node) => {
                Err(ControlError::NodeExists)
            }
            ControlOp::AddNode(a) if !Self::KINDS.contains(&a.kind.as_str()) => {
                Err(ControlError::UnknownKind)
            }
            ControlOp::AddNode(a) => {
                self.nodes.insert(a.node, a.kind.as_str().to_owned());
                Ok(())
            }
            ControlOp::RemoveNode { node } => {
                self.nodes.remove(node).ok_or(ControlError::UnknownNode)?;
                self.edges.retain(|e| e.0 != *node && e.2 != *node);
                Ok(())
            }
            ControlOp::Connect(e) => {
                self.check_ends(e)?;
                self.edges.insert(key(e));
                Ok(())
            }
            ControlOp::Disconnect(e) => {
                self.check_ends(e)?;
                self.edges.remove(&key(e));
                Ok(())
            }
            _ => Err(ControlError::Unsupported),
        }
    }

    fn check_ends(&self, e: &Edge) -> Result<(), ControlError> {
        if self.nodes.contains_key(&e.from) && self.nodes.contains_key(&e.to) {
            Ok(())
        } else {
            Err(ControlError::UnknownNode)
        }
    }
}

fn key(e: &Edge) -> (u32, u16, u32, u16) {
    (e.from, e.from_port, e.to, e.to_port)
}

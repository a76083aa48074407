//! `aura` — an example supervising client, the shape a UI process (Aura) would take.
//!
//! It spawns the engine (`signal`) with a fresh session token in its environment, reads the port
//! from the engine's announcement line, connects, and supervises it: a dead engine is restarted
//! with backoff (at most 5 restarts per 3 minutes) and the session resumes on the new instance.
//! On exit the engine is shut down politely (`engine.shutdown`, then SIGTERM, then SIGKILL), so
//! no engine is left behind. Run `aura --help` for the subcommands.
#![deny(unsafe_code)]

#[path = "aura/demo.rs"]
mod demo;
#[path = "aura/engine.rs"]
mod engine;
#[path = "aura/link.rs"]
mod link;
#[path = "aura/report.rs"]
mod report;
#[path = "aura/sys.rs"]
mod sys;
#[path = "aura/tools.rs"]
mod tools;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use engine::EngineSpec;
use link::{Link, LinkError, Target};
use report::Reporter;
use tools::{WatchLimits, MAX_RATE_HZ, MIN_RATE_HZ};

/// Success.
const EXIT_OK: i32 = 0;
/// The session failed (engine lost, an error answer to `send`, interrupted).
const EXIT_FAILURE: i32 = 1;
/// Bad arguments.
const EXIT_USAGE: i32 = 2;
/// The engine could not be started or reached.
const EXIT_NO_ENGINE: i32 = 3;
/// The engine kept dying: the restart budget is spent.
const EXIT_GAVE_UP: i32 = 4;
/// Stopped by SIGINT/SIGTERM (the engine was shut down first).
const EXIT_INTERRUPTED: i32 = 130;

const HELP: &str = "\
aura — example supervising client for the Loophole engine (loophole-ipc).

USAGE:
    aura [OPTIONS] [COMMAND]

COMMANDS:
    demo                A scripted session (default): play, sweep the oscillator, seek, stop,
                        with live meters; then a summary (commands, acks, telemetry, drops,
                        command→ack latency percentiles, meter and transport checks).
        --duration S    Length of the script in seconds. Default 6.
    send NAME JSON      Send one command as given and print its answer, e.g.
                        aura send param.set '{\"node\":1,\"param\":0,\"value\":330}'
    watch               Subscribe to every telemetry stream and print frames as they arrive.
        --count N       Stop after N frames.          --seconds S   Stop after S seconds.
        --rate HZ       Frames per second per stream, 1..=120 (scope and spectrum at most
                        60); another value is refused (exit 2). Default 10.
        --play          Start the transport first.
        --tap N         Analysis tap for the scope and spectrum lines (when the engine has
                        taps, welcome.taps > 0). Default 0. signal: 0/1 master L/R, 2 a
                        1 kHz test tone. A tap the engine does not have ends aura with exit
                        code 1 (known only once connected). The spectrum is one line of 64
                        columns on a log axis from 20 Hz (or the first bin above DC:
                        23 Hz at 1024 bins of 48 kHz) to Nyquist, ' .:-=+*#%@' from -96 to
                        0 dBFS.
    ping                Round-trip times of sequential pings (each answered by a pong): p50,
                        p99, p99.9, max; `lost`: pings with no pong within 5 s.
        --count N       Number of pings. Default 1000.
        --rt            Go through the audio thread and back (ping with \"rt\": true).

OPTIONS:
    --engine PATH       The engine binary. Default: `signal` next to this executable. Under
                        `cargo run` aura first runs `cargo build --example signal` (same
                        profile), so the engine is there and up to date; run directly, aura
                        builds it only when it is missing (in a source checkout).
    --engine-arg ARG    Extra argument for the engine (repeatable), e.g. --engine-arg=--block-size=256
    --no-rt             Pass --no-rt to the engine (no SCHED_FIFO request).
    --connect HOST:PORT Attach to an engine started by hand instead of spawning one (token from
                        LOOPHOLE_SESSION_TOKEN if set). It is not restarted or shut down: if
                        the connection drops, aura reconnects to HOST:PORT (trying for 5 s) and
                        resumes, or exits 3 if nothing answers there; on exit aura says goodbye.
    --json              Machine-readable output: one JSON object per line on stdout (events such
                        as engine_started, ack, pong, connection_lost, reconnecting,
                        session_resumed; the demo summary as {\"event\":\"summary\",...}).
                        Human text goes to stderr.
    -h, --help          Print this help.

SUMMARY TERMS (demo):
    lost        commands whose answer will never come: they were outstanding when the
                engine died or the connection dropped (counted at each restart/reconnect).
    unanswered  commands still without an answer when the demo ended (after 1 s of waiting).
    shed        telemetry frames the engine did not send because aura read too slowly
                (engine.health telemetry_shed); `dropped`: frames the audio thread could not
                queue (telemetry_dropped). Summed over every engine instance.

SUPERVISION:
    The engine gets a fresh random token (LOOPHOLE_SESSION_TOKEN, from /dev/urandom) and
    --supervisor-pid <aura's pid>; on Linux it also gets SIGTERM if aura dies. If it dies, aura
    restarts it after 0.1, 0.2, 0.4, 0.8, 1.6 s, re-subscribes, re-sends the transport state and
    parameters it had asked for, and goes on. A sixth death within 3 minutes ends aura (exit 4).

EXIT CODES:
    0 ok   1 session failed / error answer / watch --tap the engine lacks   2 bad arguments
    3 engine could not start or be reached (with --connect, also when the engine is lost and
    reconnecting fails)   4 restart budget spent   130 interrupted (SIGINT/SIGTERM; engine shut
    down)
";

#[derive(Debug)]
enum Cmd {
    Demo { duration: f64 },
    Send { name: String, body: String },
    Watch(WatchLimits),
    Ping { count: u32, rt: bool },
}

#[derive(Debug)]
struct Options {
    cmd: Cmd,
    json: bool,
    engine: Option<PathBuf>,
    engine_args: Vec<String>,
    connect: Option<Vec<SocketAddr>>,
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{opt}: `{v}` is not a valid number"))
}

fn parse_args(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut it = args.into_iter();
    let mut positional = Vec::new();
    let mut json = false;
    let mut engine = None;
    let mut engine_args = Vec::new();
    let mut connect = None;
    let mut duration = 6.0;
    let mut limits = WatchLimits {
        rate_hz: 10,
        ..WatchLimits::default()
    };
    let in_range = |opt: &str, v: String, lo: u64, hi: u64| -> Result<u64, String> {
        let n = parse_num::<u64>(opt, &v).map_err(|e| {
            if v.trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
                && !v.is_empty()
            {
                format!("{opt}: {v} is outside {lo}..={hi}")
            } else {
                e
            }
        })?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{opt}: {v} is outside {lo}..={hi}"))
        }
    };
    let mut count = None;
    let mut rt = false;
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json = true,
            "--engine" => engine = Some(PathBuf::from(value()?)),
            "--engine-arg" => engine_args.push(value()?),
            "--no-rt" => engine_args.push("--no-rt".into()),
            "--connect" => {
                let v = value()?;
                // Every address HOST resolves to, tried in order (`localhost` may give ::1
                // first while the engine listens on 127.0.0.1).
                let addrs: Vec<SocketAddr> = v
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .unwrap_or_default();
                if addrs.is_empty() {
                    return Err(format!("--connect: `{v}` is not HOST:PORT"));
                }
                connect = Some(addrs);
            }
            "--duration" => duration = parse_num::<f64>(&name, &value()?)?,
            "--count" => count = Some(parse_num::<u64>(&name, &value()?)?),
            "--seconds" => {
                let s: f64 = parse_num(&name, &value()?)?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err(format!(
                        "--seconds: {s} is not a positive number of seconds"
                    ));
                }
                limits.seconds = Some(s);
            }
            "--rate" => {
                let (lo, hi) = (u64::from(MIN_RATE_HZ), u64::from(MAX_RATE_HZ));
                limits.rate_hz = in_range(&name, value()?, lo, hi)? as u16;
            }
            "--play" => limits.play = true,
            "--tap" => limits.tap = Some(in_range(&name, value()?, 0, u64::from(u16::MAX))? as u16),
            "--rt" => rt = true,
            s if s.starts_with('-') && s.len() > 1 && !s.starts_with("-{") => {
                return Err(format!("unknown option `{s}`"))
            }
            _ => positional.push(arg),
        }
    }
    if !(duration > 0.0 && duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    let mut pos = positional.into_iter();
    let cmd = match pos.next().as_deref() {
        None | Some("demo") => Cmd::Demo { duration },
        Some("send") => {
            let (Some(name), Some(body)) = (pos.next(), pos.next()) else {
                return Err("send needs NAME and JSON, e.g. send transport.play '{}'".into());
            };
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .filter(serde_json::Value::is_object)
                .ok_or_else(|| format!("send: the body `{body}` is not a JSON object"))?;
            Cmd::Send { name, body }
        }
        Some("watch") => {
            limits.count = count;
            Cmd::Watch(limits)
        }
        Some("ping") => Cmd::Ping {
            count: u32::try_from(count.unwrap_or(1000)).map_err(|_| "--count too large")?,
            rt,
        },
        Some(other) => return Err(format!("unknown command `{other}`")),
    };
    if let Some(extra) = pos.next() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    Ok(Some(Options {
        cmd,
        json,
        engine,
        engine_args,
        connect,
    }))
}

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let opts = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return EXIT_OK;
        }
        Err(msg) => {
            eprintln!("aura: {msg}\nTry `aura --help`.");
            return EXIT_USAGE;
        }
    };
    sys::catch_stop_signals();
    let report = Reporter { json: opts.json };
    let target = match opts.connect {
        Some(addrs) => Target::Connect(addrs),
        None => match engine::locate(opts.engine.as_deref()) {
            Ok(path) => Target::Spawn(EngineSpec {
                path,
                args: opts.engine_args.clone(),
                echo_stderr: true,
            }),
            Err(msg) => {
                report.fatal(&msg);
                return EXIT_NO_ENGINE;
            }
        },
    };
    let mut link = match Link::open(target, report) {
        Ok(l) => l,
        Err(e) => {
            report.fatal(&e.to_string());
            return EXIT_NO_ENGINE;
        }
    };
    let outcome = match opts.cmd {
        Cmd::Demo { duration } => {
            demo::run(&mut link, Duration::from_secs_f64(duration), report).map(|()| true)
        }
        Cmd::Send { name, body } => tools::send(&mut link, &name, &body, report),
        Cmd::Watch(limits) => tools::watch(&mut link, limits, report),
        Cmd::Ping { count, rt } => tools::ping(&mut link, count, rt, report).map(|()| true),
    };
    link.close();
    match outcome {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_FAILURE,
        Err(LinkError::Interrupted) => {
            eprintln!("aura: interrupted; the engine was shut down");
            EXIT_INTERRUPTED
        }
        Err(e @ LinkError::GaveUp { .. }) => {
            report.fatal(&e.to_string());
            EXIT_GAVE_UP
        }
        Err(e @ (LinkError::Connect(..) | LinkError::Reconnect(..))) => {
            report.fatal(&e.to_string());
            EXIT_NO_ENGINE
        }
        Err(e) => {
            report.fatal(&e.to_string());
            EXIT_FAILURE
        }
    }
}

//! A minimal engine process: the network thread, a simulated audio thread, and a control thread
//! (this `main`). It prints the one announcement line on stdout; everything else goes to stderr.
//!
//! ```text
//! LOOPHOLE_SESSION_TOKEN=secret cargo run --example net_engine -- [--port N | --ports A-B]
//!     [--supervisor PID] [--connection-file PATH]
//! ```
//!
//! Exit status: 0 after `engine.shutdown` or orphaning, 2 when the server cannot start.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loophole_ipc::clock;
use loophole_ipc::config::{token_from_env, PortPolicy};
use loophole_ipc::control::{ControlError, ControlOp};
use loophole_ipc::net::Server;
use loophole_ipc::rt::{bridge, Outcome, RejectReason, RtConfig, RtOp, TransportState};

const SAMPLE_RATE: u32 = 48_000;
const BLOCK: u32 = 256;

fn main() {
    let mut builder = Server::builder()
        .token(token_from_env())
        .sample_rate(SAMPLE_RATE)
        .block_size(BLOCK);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        builder = match a.as_str() {
            "--port" => builder.port(PortPolicy::Fixed(v.parse().unwrap_or(0))),
            "--ports" => {
                let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                builder.port(PortPolicy::Range {
                    first: a.parse().unwrap_or(0),
                    last: b.parse().unwrap_or(0),
                })
            }
            "--supervisor" => builder.supervisor_pid(v.parse().ok()),
            "--connection-file" => builder.connection_file(Some(v.into())),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        };
    }
    let _ = clock::now_ns(); // fix the clock epoch before the audio thread starts
    let (mut audio, net) = bridge(&RtConfig::default());
    let (server, control) = match builder.spawn(net) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("signal: {e}");
            std::process::exit(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.announcement());
    let _ = out.flush();
    drop(out);

    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let audio_thread = std::thread::spawn(move || {
        let mut t = TransportState {
            playing: false,
            position: 0,
            bpm: 120.0,
            loop_start: 0,
            loop_end: 0,
            loop_enabled: false,
        };
        let period = Duration::from_secs_f64(f64::from(BLOCK) / f64::from(SAMPLE_RATE));
        let mut block = [0.0f32; BLOCK as usize];
        let mut phase = 0.0f32;
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            audio.begin_callback(clock::now_ns(), BLOCK);
            audio.drain(|cmd| match cmd.op {
                RtOp::Play => {
                    t.playing = true;
                    Outcome::Applied
                }
                RtOp::Stop => {
                    t.playing = false;
                    Outcome::Applied
                }
                RtOp::Seek { position } => {
                    t.position = position;
                    Outcome::Applied
                }
                RtOp::Tempo { bpm } => {
                    t.bpm = bpm;
                    Outcome::Applied
                }
                RtOp::Loop {
                    start,
                    end,
                    enabled,
                } => {
                    (t.loop_start, t.loop_end, t.loop_enabled) = (start, end, enabled);
                    Outcome::Applied
                }
                RtOp::ParamSet { .. } => Outcome::Rejected(RejectReason::UnknownNode),
                RtOp::Ping { .. } => Outcome::Applied,
            });
            for s in block.iter_mut() {
                *s = if t.playing { 0.5 * phase.sin() } else { 0.0 };
                phase = (phase + 0.0576) % std::f32::consts::TAU;
            }
            if t.playing {
                t.position += u64::from(BLOCK);
            }
            audio.publish_meters(&[&block, &block]);
            audio.publish_transport(&t);
            audio.end_callback(clock::now_ns());
            next += period;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });

    // The control thread: graph edits, shutdown, orphaning.
    let mut nodes = BTreeSet::new();
    loop {
        let req = match control.recv_timeout(Duration::from_millis(200)) {
            Ok(req) => req,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = match &req.op {
            ControlOp::AddNode(a) if nodes.contains(&a.node) => Err(ControlError::NodeExists),
            ControlOp::AddNode(a) => {
                nodes.insert(a.node);
                Ok(())
            }
            ControlOp::RemoveNode { node } if nodes.remove(node) => Ok(()),
            ControlOp::RemoveNode { .. } => Err(ControlError::UnknownNode),
            ControlOp::Connect(_) | ControlOp::Disconnect(_) => Ok(()),
            ControlOp::Shutdown => {
                let _ = control.reply(req.id, Ok(()));
                eprintln!("signal: engine.shutdown received");
                break;
            }
            ControlOp::Orphaned => {
                eprintln!("signal: supervisor gone and no client came back; exiting");
                break;
            }
            _ => Err(ControlError::Unsupported),
        };
        let _ = control.reply(req.id, result);
    }
    server.shutdown(); // goodbye(shutdown), flush, join
    stop.store(true, Ordering::Relaxed);
    let _ = audio_thread.join();
}

//! The smallest engine: what the README's "embedding" section shows, as a program that runs.
//!
//! Replace the stand-in host loop with your audio host's callback (CPAL, JACK, CoreAudio…). Any
//! command-line arguments are ignored (so `aura --engine target/debug/examples/embed` can drive
//! it). Token from `LOOPHOLE_SESSION_TOKEN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loophole_ipc::clock;
use loophole_ipc::config::token_from_env;
use loophole_ipc::control::{ControlError, ControlOp};
use loophole_ipc::net::Server;
use loophole_ipc::rt::{bridge, Outcome, RejectReason, RtConfig, RtOp, TransportState};

const RATE: u32 = 48_000;
const FRAMES: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Start-up: everything that allocates happens here.
    let _ = clock::now_ns(); // fix the clock's epoch before the audio thread runs
    let mut cfg = RtConfig::default();
    cfg.sample_rate = RATE;
    let (mut audio, net) = bridge(&cfg);
    let (server, control) = Server::builder()
        .token(token_from_env())
        .sample_rate(RATE)
        .block_size(FRAMES as u32)
        .spawn(net)?;
    println!("{}", server.announcement()); // the one line on stdout

    let running = Arc::new(AtomicBool::new(true));
    let host_running = Arc::clone(&running);
    let host = std::thread::spawn(move || {
        let mut transport = TransportState {
            playing: false,
            position: 0,
            bpm: 120.0,
            loop_start: 0,
            loop_end: 0,
            loop_enabled: false,
        };
        let mut gain = 0.5f32;
        let mut phase = 0.0f32;
        let mut out = [0.0f32; FRAMES];
        // Stand-in for the audio host: calls the callback body once per block.
        while host_running.load(Ordering::Relaxed) {
            // ---- the audio callback: no allocation, no lock, no system call ----
            audio.begin_callback(clock::now_ns(), FRAMES as u32);
            audio.drain(|cmd| match cmd.op {
                RtOp::Play => {
                    transport.playing = true;
                    Outcome::Applied
                }
                RtOp::Stop => {
                    transport.playing = false;
                    Outcome::Applied
                }
                RtOp::Seek { position } => {
                    transport.position = position;
                    Outcome::Applied
                }
                RtOp::ParamSet {
                    node: 2,
                    param: 0,
                    value,
                    ..
                } if (0.0..=4.0).contains(&value) => {
                    gain = value;
                    Outcome::Applied
                }
                RtOp::ParamSet { node: 2, .. } => Outcome::Rejected(RejectReason::OutOfRange),
                RtOp::ParamSet { .. } => Outcome::Rejected(RejectReason::UnknownNode),
                _ => Outcome::Rejected(RejectReason::Unsupported),
            });
            for s in &mut out {
                *s = if transport.playing {
                    gain * (phase * std::f32::consts::TAU).sin()
                } else {
                    0.0
                };
                phase = (phase + 440.0 / RATE as f32).fract();
            }
            if transport.playing {
                transport.position += FRAMES as u64;
            }
            audio.publish_meters(&[&out, &out]);
            audio.publish_transport(&transport);
            audio.end_callback(clock::now_ns());
            // ---- end of the callback ----
            std::thread::sleep(Duration::from_secs_f64(FRAMES as f64 / f64::from(RATE)));
        }
    });

    // The control thread (here: main): graph edits and engine.shutdown.
    loop {
        let Ok(req) = control.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match req.op {
            ControlOp::Shutdown => {
                let _ = control.reply(req.id, Ok(()));
                break;
            }
            ControlOp::Orphaned => break,
            _ => {
                let _ = control.reply(req.id, Err(ControlError::Unsupported));
            }
        }
    }
    server.shutdown(); // answers owed go out, then `goodbye shutdown`
    running.store(false, Ordering::Relaxed);
    let _ = host.join();
    Ok(())
}

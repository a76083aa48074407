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
use loophole_ipc::rt::{
    bridge, AudioEndpoint, Outcome, RejectReason, RtConfig, RtOp, TransportState,
};

/// The engine's own state, owned by the audio thread.
struct Engine {
    transport: TransportState,
    gain: f32,
    phase: f32,
}

/// The audio callback: wait-free and bounded; no allocation, no lock, no system call.
fn process(audio: &mut AudioEndpoint, e: &mut Engine, out: &mut [f32]) {
    audio.begin_callback(clock::now_ns(), out.len() as u32);
    audio.drain(|cmd| match cmd.op {
        RtOp::Play => {
            e.transport.playing = true;
            Outcome::Applied
        }
        RtOp::Stop => {
            e.transport.playing = false;
            Outcome::Applied
        }
        RtOp::ParamSet {
            node: 2,
            param: 0,
            value,
            ..
        } if (0.0..=4.0).contains(&value) => {
            e.gain = value;
            Outcome::Applied
        }
        RtOp::ParamSet { node: 2, .. } => Outcome::Rejected(RejectReason::OutOfRange),
        RtOp::ParamSet { .. } => Outcome::Rejected(RejectReason::UnknownNode),
        _ => Outcome::Rejected(RejectReason::Unsupported),
    });
    for s in out.iter_mut() {
        let on = if e.transport.playing { e.gain } else { 0.0 };
        *s = on * (e.phase * std::f32::consts::TAU).sin();
        e.phase = (e.phase + 440.0 / 48_000.0).fract();
    }
    if e.transport.playing {
        e.transport.position += out.len() as u64;
    }
    audio.publish_meters(&[out]);
    audio.publish_transport(&e.transport);
    audio.end_callback(clock::now_ns());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Start-up, off the audio thread: everything that allocates happens here.
    let _ = clock::now_ns(); // fix the clock's epoch before the first callback
    let mut cfg = RtConfig::default();
    cfg.sample_rate = 48_000;
    cfg.meter_channels = 1;
    let (mut audio, net) = bridge(&cfg);
    let (server, control) = Server::builder()
        .token(token_from_env()?)
        .sample_rate(48_000)
        .block_size(128)
        .spawn(net)?;
    println!("{}", server.announcement()); // the one line on stdout

    // Stand-in for the audio host: calls `process` once per 128-frame block.
    let running = Arc::new(AtomicBool::new(true));
    let host_running = Arc::clone(&running);
    let host = std::thread::spawn(move || {
        let transport = TransportState::default();
        let mut engine = Engine {
            transport,
            gain: 0.5,
            phase: 0.0,
        };
        let mut out = [0.0f32; 128];
        while host_running.load(Ordering::Relaxed) {
            process(&mut audio, &mut engine, &mut out);
            std::thread::sleep(Duration::from_micros(2_667)); // a real host wakes you instead
        }
    });

    // The control thread (here: main): graph edits and engine.shutdown.
    loop {
        let Ok(req) = control.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match req.op {
            ControlOp::Shutdown => {
                let _ = control.reply(req.ticket, Ok(()));
                break;
            }
            ControlOp::Orphaned => break,
            _ => {
                let _ = control.reply(req.ticket, Err(ControlError::Unsupported));
            }
        }
    }
    server.shutdown(); // owed answers go out, then `goodbye shutdown`
    running.store(false, Ordering::Relaxed);
    let _ = host.join();
    Ok(())
}

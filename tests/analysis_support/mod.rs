//! Shared rig of the analysis tests: a simulated audio thread publishing known tones into taps,
//! the real network thread with an analysis worker, and `examples/signal`'s own analysis worker.
#![allow(dead_code)]

#[path = "../../examples/signal/analysis.rs"]
pub mod analysis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientError, ClientOptions};
use loophole_ipc::clock;
use loophole_ipc::net::{ServerBuilder, ServerHandle};
use loophole_ipc::rt::{bridge, Outcome, RtConfig};
use loophole_ipc::ErrorCode;

pub const RATE: u32 = 48_000;
pub const BLOCK: usize = 128;
/// Tap 0: 1 kHz at 0.5. Tap 1: 3 kHz at 1.0 (another tap, another answer).
pub const TONES: [(f64, f32); 2] = [(1000.0, 0.5), (3000.0, 1.0)];

/// Sample `i` of tap `tap`: what the simulated audio thread publishes.
pub fn tone(tap: usize, i: u64) -> f32 {
    let (hz, amp) = TONES[tap];
    amp * (std::f64::consts::TAU * hz * i as f64 / f64::from(RATE)).sin() as f32
}

pub struct Rig {
    pub server: Option<ServerHandle>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
}

impl Rig {
    pub fn start(builder: ServerBuilder) -> Self {
        Self::start_with_block(builder, BLOCK)
    }

    /// [`start`](Self::start) with callbacks of `block` frames (paced like a device).
    pub fn start_with_block(builder: ServerBuilder, block: usize) -> Self {
        let _ = clock::now_ns();
        let rt = RtConfig::default()
            .with_sample_rate(RATE)
            .with_taps(TONES.len(), 1 << 16);
        let (mut audio, mut net) = bridge(&rt);
        let taps = net.take_taps().unwrap();
        let mut builder = builder;
        let worker = builder.analysis_worker(TONES.len() as u16).unwrap();
        let (server, control) = builder.spawn(net).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        // The audio thread, paced by the clock like a device (128 frames per 2.67 ms).
        let audio_thread = std::thread::spawn(move || {
            let _keep = control;
            let period = Duration::from_nanos(block as u64 * 1_000_000_000 / u64::from(RATE));
            let start = Instant::now();
            let mut buf = vec![0.0f32; block];
            let mut n: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                audio.begin_callback(clock::now_ns(), block as u32);
                audio.drain(|_| Outcome::Applied);
                for tap in 0..TONES.len() {
                    for (k, x) in buf.iter_mut().enumerate() {
                        *x = tone(tap, n * block as u64 + k as u64);
                    }
                    audio.publish_tap(tap, &buf).unwrap();
                }
                audio.publish_meters(&[&buf[..], &buf[..]]);
                audio.end_callback(clock::now_ns());
                n += 1;
                let due = start + period * n as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        let s = Arc::clone(&stop);
        let analysis_thread = std::thread::spawn(move || {
            analysis::Analyzer::new(taps, RATE).run(worker, &s);
        });
        Self {
            addr: server.local_addr(),
            server: Some(server),
            stop,
            threads: vec![audio_thread, analysis_thread],
        }
    }

    pub fn client(&self, attachments: bool) -> Client {
        let mut opts = ClientOptions::default();
        opts.attachments = attachments;
        // The previous test client may still hold the session for a moment after its close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Client::connect(self.addr, &opts) {
                Err(ClientError::Refused(ErrorCode::SessionBusy)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => return r.unwrap(),
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

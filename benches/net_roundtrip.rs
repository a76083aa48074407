//! Round-trip latency through the network thread over loopback TCP, in one run:
//!
//! * `ping` (net route) — the baseline: client → network thread → client;
//! * `ping rt` and `transport.play` (audio route) — client → network thread → audio queue →
//!   simulated audio callback (1 ms period) → reply queue → network thread → client, with the
//!   wake-up policy (sleep until the predicted callback end + 50 µs);
//! * the same audio-route command with the policy defeated (`wake_margin` = the 5 ms safety-net
//!   interval), to show what the policy buys.
//!
//! `cargo bench --bench net_roundtrip` — prints percentiles in µs and ratios to the baseline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::clock;
use loophole_ipc::message::{Play, ServerMessage};
use loophole_ipc::net::Server;
use loophole_ipc::rt::{bridge, Outcome, RtConfig};

const N: u32 = 2_000;
const PERIOD: Duration = Duration::from_millis(1);

fn main() {
    let base = run(
        "ping (net route, baseline)",
        Duration::from_micros(50),
        |c| {
            c.ping().unwrap();
        },
    );
    let rt_ping = run("ping rt (audio route)", Duration::from_micros(50), |c| {
        c.ping_rt().unwrap();
    });
    let play = run("transport.play ack", Duration::from_micros(50), play_once);
    let slow = run(
        "transport.play ack, wake policy off (margin = 5 ms)",
        Duration::from_millis(5),
        play_once,
    );
    println!();
    for (name, h) in [
        ("ping rt", &rt_ping),
        ("play", &play),
        ("play, policy off", &slow),
    ] {
        println!(
            "ratio {name} / baseline: p50 {:.1}x  p99 {:.1}x",
            h.value_at_quantile(0.5) as f64 / base.value_at_quantile(0.5).max(1) as f64,
            h.value_at_quantile(0.99) as f64 / base.value_at_quantile(0.99).max(1) as f64
        );
    }
}

fn play_once(c: &mut Client) {
    let mut other = Vec::new();
    let r = c.request(&Play {}, &mut other).unwrap();
    assert!(matches!(r, ServerMessage::Ack(_)));
}

fn run(name: &str, margin: Duration, mut op: impl FnMut(&mut Client)) -> Histogram<u64> {
    let (mut audio, net) = bridge(&RtConfig::default());
    let (server, _control) = Server::builder()
        .wake_margin(margin)
        .heartbeat_timeout(Duration::from_secs(60))
        .spawn(net)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let audio_thread = std::thread::spawn(move || {
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            audio.begin_callback(clock::now_ns(), 48);
            audio.drain(|_| Outcome::Applied);
            audio.end_callback(clock::now_ns());
            next += PERIOD;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let mut c = Client::connect(server.local_addr(), &ClientOptions::default()).unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..N + 200 {
        let t0 = Instant::now();
        op(&mut c);
        if i >= 200 {
            h.record(t0.elapsed().as_micros() as u64).unwrap();
        }
        // Decorrelate from the audio period.
        std::thread::sleep(Duration::from_micros(u64::from(i * 137 % 1000)));
    }
    stop.store(true, Ordering::Relaxed);
    audio_thread.join().unwrap();
    println!(
        "{name:55} n={N}  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  max {:>6} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
    server.shutdown();
    h
}

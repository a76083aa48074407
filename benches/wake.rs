//! Wake-up precision of the network thread's platform timer (src/net/sys), against the plain
//! `mio::Poll` timeout as baseline, in the same run and on the same thread: for each deadline
//! `ahead` in the future, how late the poll returns after it. Portable: runs on Linux, macOS
//! and Windows (and under Wine, whose figures say nothing about Windows).
//!
//! `cargo bench --bench wake` (`LOOPHOLE_WAKE_SAMPLES`, default 2000 per row; 100 without
//! `--bench`, as a smoke run under `cargo test --benches`).

use std::time::{Duration, Instant};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Lateness (ns) of `mio::Poll::poll` with a timeout of `ahead`: the baseline.
fn poll_timeout_lateness(ahead: Duration, out: &mut [u64]) -> std::io::Result<()> {
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(4);
    for slot in out.iter_mut() {
        let at = Instant::now() + ahead;
        poll.poll(&mut events, Some(ahead))?;
        *slot = Instant::now().saturating_duration_since(at).as_nanos() as u64;
    }
    Ok(())
}

fn row(name: &str, ahead: Duration, v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let p50 = percentile(v, 0.5);
    println!(
        "{name:<28} ahead {:>5} µs  late p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs  (n={})",
        ahead.as_micros(),
        us(p50),
        us(percentile(v, 0.99)),
        us(*v.last().unwrap_or(&0)),
        v.len()
    );
    p50
}

fn main() -> std::io::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("LOOPHOLE_WAKE_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 2000 } else { 100 });
    println!(
        "wake: {} {}, {n} samples per row",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    for ahead_us in [300u64, 1000] {
        let ahead = Duration::from_micros(ahead_us);
        let mut timer = vec![0u64; n];
        let mut base = vec![0u64; n];
        // Interleaved halves so drift in machine load hits both contenders alike.
        let half = n / 2;
        loophole_ipc::__timer_wake_lateness(ahead_us * 1000, &mut timer[..half])?;
        poll_timeout_lateness(ahead, &mut base[..half])?;
        loophole_ipc::__timer_wake_lateness(ahead_us * 1000, &mut timer[half..])?;
        poll_timeout_lateness(ahead, &mut base[half..])?;
        let t = row("platform timer (src/net/sys)", ahead, &mut timer);
        let b = row("mio poll timeout (baseline)", ahead, &mut base);
        println!(
            "  p50 lateness ratio timer / poll timeout: {:.3}",
            t as f64 / b.max(1) as f64
        );
    }
    Ok(())
}

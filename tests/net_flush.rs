//! The network thread's CPU time while the server stops (issue 9, defect 3). A client byte
//! arriving during the shutdown flush used to leave the connection "readable" while nothing was
//! read, so the loop polled with timeout 0 (390 ms of CPU in 400 ms). Linux: reads the thread's
//! utime+stime from /proc (USER_HZ = 100 ticks/s on every Linux).
#![cfg(target_os = "linux")]

mod net_support;

use std::time::{Duration, Instant};

use loophole_ipc::message::*;
use net_support::*;

/// utime + stime of the thread named `loophole-net`, in ms (one server in this binary).
fn net_thread_cpu_ms() -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "loophole-net" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        return Some((utime + stime) * 10);
    }
    None
}

/// Stops the server, calling `during` every 5 ms until it is stopped, and asserts that the
/// flush waited (at least 400 ms) and that the network thread used under a quarter of it.
fn assert_flush_does_not_spin(e: &mut Engine, what: &str, mut during: impl FnMut()) {
    let cpu0 = net_thread_cpu_ms().expect("the network thread is found");
    let t0 = Instant::now();
    let server = e.server.take().unwrap();
    let stopper = std::thread::spawn(move || server.shutdown());
    let mut cpu1 = cpu0;
    while !stopper.is_finished() {
        during();
        if let Some(c) = net_thread_cpu_ms() {
            cpu1 = c;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed();
    let _ = stopper.join();
    let cpu = cpu1 - cpu0;
    eprintln!("network thread: {cpu} ms CPU in {wall:?} of shutdown flush ({what})");
    assert!(
        wall >= Duration::from_millis(400),
        "the flush waited: {wall:?}"
    );
    assert!(
        (cpu as u128) * 4 < wall.as_millis(),
        "the network thread spun: {cpu} ms CPU in {wall:?}"
    );
}

#[test]
fn the_shutdown_flush_does_not_spin_while_a_client_keeps_sending() {
    let mut e = Engine::start(fast().flush_timeout(Duration::from_secs(1)));
    e.pause_audio(true);
    let mut w = raw_session(e.addr);
    // In flight and never answered while the audio thread is paused: the flush waits its half
    // (500 ms) for it.
    w.send(Some(2), &Play {});
    std::thread::sleep(Duration::from_millis(50));
    let ping = Ping {
        nonce: 1,
        t_client_us: None,
        rt: false,
    };
    let mut id = 10;
    assert_flush_does_not_spin(&mut e, "client sending", || {
        // Bytes keep arriving during the flush.
        let _ = std::io::Write::write_all(&mut w.stream, &frame(Some(id), &ping));
        id += 1;
    });
}

/// Review (issue 9, after the hardening): a subscribed client during the shutdown flush. No
/// telemetry is sent while stopping, so the subscription's next time stays in the past; before
/// the fix the session's `poll_at` named it and the loop polled with timeout 0 for the whole
/// wait for the owed answer (half the flush time): 200 ms CPU in 507 ms. The client sends
/// nothing during the flush.
#[test]
fn the_shutdown_flush_does_not_spin_for_a_subscribed_client() {
    let mut e = Engine::start(fast().flush_timeout(Duration::from_secs(1)));
    e.pause_audio(true);
    let mut w = raw_session(e.addr);
    w.send(
        Some(3),
        &Subscribe {
            stream: Stream::Transport,
            rate_hz: 100,
        },
    );
    // In flight and never answered while the audio thread is paused.
    w.send(Some(2), &Play {});
    std::thread::sleep(Duration::from_millis(50));
    assert_flush_does_not_spin(&mut e, "subscribed", || {});
}

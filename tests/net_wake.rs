//! `rt-wake`: the audio thread wakes the network thread through `ServerBuilder::audio_waker`, so
//! an ack leaves when its callback ends even when the callback-end prediction is useless.
#![cfg(feature = "rt-wake")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::clock;
use loophole_ipc::message::{Play, ServerMessage};
use loophole_ipc::net::Server;
use loophole_ipc::rt::{bridge, Outcome, RtConfig};

/// Times from sending `transport.play` to its ack (`requests` in a row), with an audio thread that runs a callback
/// every 10 ms but declares a 1 s block (so the network thread's prediction says "in a
/// second"), and a safety-net poll of 2 s.
fn ack_delays(with_waker: bool, requests: usize) -> Vec<Duration> {
    let mut builder = Server::builder().telemetry_poll(Duration::from_secs(2));
    let mut rt = RtConfig::default();
    if with_waker {
        rt = rt.with_waker(builder.audio_waker().unwrap());
    }
    let (mut audio, net) = bridge(&rt);
    let (server, _control) = builder.spawn(net).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let audio_thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            audio.begin_callback(clock::now_ns(), 48_000);
            audio.drain(|_| Outcome::Applied);
            audio.end_callback(clock::now_ns());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut client = Client::connect(server.local_addr(), &ClientOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // a few callbacks: the prediction exists
    let mut seen = Vec::new();
    let took = (0..requests)
        .map(|_| {
            let t = Instant::now();
            let reply = client.request(&Play {}, &mut seen).unwrap();
            assert!(matches!(reply, ServerMessage::Ack(_)), "{reply:?}");
            t.elapsed()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    audio_thread.join().unwrap();
    drop(server);
    took
}

#[test]
fn the_audio_thread_wakes_the_network_thread() {
    let woken = ack_delays(true, 3);
    assert!(
        woken.iter().all(|d| *d < Duration::from_millis(300)),
        "with the waker: {woken:?}"
    );
    // Negative control: without the waker the ack waits for the (useless) prediction or the
    // 2 s safety net. The median of three: one ack may, rarely, find its callback running in
    // the few microseconds between routing the command and the network thread's last look.
    let mut predicted = ack_delays(false, 3);
    predicted.sort();
    assert!(
        predicted[1] > Duration::from_millis(500),
        "without the waker: {predicted:?}"
    );
}

/// Time to the ack of `transport.play` through `server` (same audio set-up as [`ack_delays`]).
fn request_delay(server: &loophole_ipc::net::ServerHandle) -> Duration {
    let mut client = Client::connect(server.local_addr(), &ClientOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let mut seen = Vec::new();
    let reply = client.request(&Play {}, &mut seen).unwrap();
    let took = t.elapsed();
    assert!(matches!(reply, ServerMessage::Ack(_)), "{reply:?}");
    took
}

/// Regression (fails on main, where the audio side kept the first server's waker and woke a
/// dead event loop): after `shutdown()` and a new server on the same bridge, the audio thread
/// wakes the new one. The new builder is not even asked for its waker: the bridge wakes, so
/// `spawn` installs the new loop's. Negative control: `the_audio_thread_wakes_the_network_thread`
/// (without a waker the same set-up takes > 500 ms).
#[test]
fn the_waker_follows_the_server_across_a_restart() {
    let mut builder = Server::builder().telemetry_poll(Duration::from_secs(2));
    let rt = RtConfig::default().with_waker(builder.audio_waker().unwrap());
    let (mut audio, net) = bridge(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let audio_thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            audio.begin_callback(clock::now_ns(), 48_000); // a declared 1 s block
            audio.drain(|_| Outcome::Applied);
            audio.end_callback(clock::now_ns());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (server, _control) = builder.spawn(net).unwrap();
    let first = request_delay(&server);
    let net = server.shutdown().expect("the bridge endpoint back");
    assert!(net.wakes());
    let (server, _control) = Server::builder()
        .telemetry_poll(Duration::from_secs(2))
        .spawn(net)
        .unwrap();
    let second = request_delay(&server);
    let (server, _control) = Server::builder()
        .telemetry_poll(Duration::from_secs(2))
        .spawn(server.shutdown().unwrap())
        .unwrap();
    let third = request_delay(&server);
    stop.store(true, Ordering::Relaxed);
    audio_thread.join().unwrap();
    drop(server);
    for (n, took) in [first, second, third].iter().enumerate() {
        assert!(
            *took < Duration::from_millis(300),
            "server {}: ack after {took:?}",
            n + 1
        );
    }
}

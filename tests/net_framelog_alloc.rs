//! Allocations per message with the frame log ON (tests/net_alloc.rs measures it OFF).
//!
//! The counting allocator counts every allocation in the process, so this counts the network
//! thread's and the log writer thread's together (plus this test's client, which uses
//! pre-encoded frames and a fixed buffer). Target: 0 in steady state, after a warm-up in which
//! the writer's per-connection buffers reach their size. A negative control shows that the
//! writer thread's allocations would be seen: a larger frame on a new connection makes its
//! buffer grow, and that is counted.

mod net_support;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loophole_ipc::frame::FrameDecoder;
use loophole_ipc::message::{Envelope, Ping, Play, Stop, Stream, Subscribe};
use loophole_ipc::net::FrameLogConfig;
use net_support::*;

mod counting_alloc;
use counting_alloc::ALLOCS;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Reads once into the fixed buffer; returns (answers, telemetry, last ref) seen.
fn read_frames(s: &mut std::net::TcpStream, dec: &mut FrameDecoder<Vec<u8>>) -> (u64, u64, u32) {
    let n = s.read(dec.spare()).expect("engine keeps the connection");
    assert!(n > 0, "engine closed the connection");
    dec.commit(n);
    let (mut answers, mut telemetry, mut last) = (0, 0, 0);
    while let Some(f) = dec.next_frame() {
        let env = Envelope::parse(f.unwrap().payload).unwrap();
        match env.reference {
            Some(r) => {
                answers += 1;
                last = r;
            }
            None => telemetry += 1,
        }
    }
    (answers, telemetry, last)
}

#[test]
fn steady_state_allocations_per_message_with_the_frame_log_on() {
    let path = std::env::temp_dir().join(format!("loophole-fl-alloc-{}.jsonl", std::process::id()));
    let e = Engine::start(
        fast()
            .heartbeat_timeout(Duration::from_secs(30))
            .slow_consumer_timeout(Duration::from_secs(30))
            .frame_log(Some(FrameLogConfig::new(&path))),
    );
    let mut w = raw_session(e.addr);
    for (i, stream) in [Stream::Meters, Stream::Transport, Stream::Health]
        .into_iter()
        .enumerate()
    {
        let body = Subscribe {
            stream,
            rate_hz: 120,
        };
        w.send(Some(10 + i as u32), &body);
    }
    const N: u32 = 2_000;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let id = 1_000 + i;
            match i % 3 {
                0 => frame(Some(id), &Play {}),
                1 => frame(
                    Some(id),
                    &Ping {
                        nonce: i,
                        t_client_us: Some(1),
                        rt: i % 2 == 0,
                    },
                ),
                _ => frame(Some(id), &Stop {}),
            }
        })
        .collect();
    let mut stream = w.stream.try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut dec = FrameDecoder::without_preface(vec![0u8; 8 + 65_536], 65_536).unwrap();
    // Warm-up: first-use paths, and the writer's buffers growing to the largest frame.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        read_frames(&mut stream, &mut dec);
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    let (mut answers, mut telemetry) = (0u64, 0u64);
    for (i, f) in frames.iter().enumerate() {
        stream.write_all(f).unwrap();
        let id = 1_000 + i as u32;
        loop {
            let (a, t, last) = read_frames(&mut stream, &mut dec);
            answers += a;
            telemetry += t;
            if a > 0 && last == id {
                break;
            }
        }
    }
    // Let the writer take and write the window's last records before counting.
    std::thread::sleep(loophole_ipc::net::WRITER_POLL * 4);
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;
    let messages = u64::from(N) + answers + telemetry;
    eprintln!(
        "net_framelog_alloc: {allocs} allocations over {messages} messages ({N} commands, \
         {answers} answers, {telemetry} telemetry) with the frame log on"
    );
    assert_eq!(answers, u64::from(N), "every command answered once");
    assert!(telemetry > 50, "telemetry flowed: {telemetry}");

    // Negative control: the writer thread's allocations are counted, so the zero above covers
    // it: a frame larger than any before, on a new connection, makes its payload buffer grow.
    let mut extra = raw(e.addr);
    extra.write_all(&loophole_ipc::frame::PREFACE).unwrap();
    let payload = format!(
        r#"{{"type":"command","name":"x","id":1,"body":{{"pad":"{}"}}}}"#,
        "a".repeat(30_000)
    );
    let mut big = (payload.len() as u32).to_be_bytes().to_vec();
    big.extend([1, 0, 0, 0]);
    big.extend_from_slice(payload.as_bytes());
    std::thread::sleep(loophole_ipc::net::WRITER_POLL * 6);
    let before_ctl = ALLOCS.load(Ordering::SeqCst);
    extra.write_all(&big).unwrap();
    std::thread::sleep(loophole_ipc::net::WRITER_POLL * 6);
    let ctl = ALLOCS.load(Ordering::SeqCst) - before_ctl;
    drop(extra);
    assert!(ctl > 0, "the log writer's buffer growth was not counted");

    drop(w);
    drop(e);
    let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    let _ = std::fs::remove_file(&path);
    assert!(
        lines >= messages,
        "the log has {lines} lines for {messages} messages"
    );
    assert_eq!(allocs, 0, "allocations in the steady-state window, log on");
}

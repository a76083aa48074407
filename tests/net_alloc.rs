//! Allocations of the network thread per message in steady state (target: 0).
//!
//! A counting global allocator counts every allocation in the process. During the measured
//! window the only threads that run are the network thread, the simulated audio thread (which
//! never allocates), a control thread answering `graph.connect` with non-blocking calls, and this
//! test's client loop, which uses pre-encoded frames and a fixed receive buffer — so what is
//! counted is the network thread's (and the control route's queues). Two negative controls show the
//! counter sees allocations: one on this thread, one on another thread. Accepting connections
//! allocates nothing either (buffers are pooled per slot).

mod net_support;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loophole_ipc::frame::FrameDecoder;
use loophole_ipc::message::{
    Connect, Edge, Envelope, Kind, ParamSet, Ping, Play, Stop, Stream, Subscribe,
};
use net_support::*;

mod counting_alloc;
use counting_alloc::ALLOCS;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

#[test]
fn steady_state_allocations_per_message() {
    let mut e = Engine::start(
        fast()
            .heartbeat_timeout(Duration::from_secs(30))
            .slow_consumer_timeout(Duration::from_secs(30)),
    );
    // A control thread that polls without blocking (a blocking `recv` may allocate its wait
    // registration, which would be the control thread's, not the network thread's).
    let control = e.control.take().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = std::sync::Arc::clone(&stop);
    let control_thread = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match control.try_recv() {
                Ok(req) => control.reply(req.ticket, Ok(())).unwrap(),
                Err(_) => std::thread::sleep(Duration::from_micros(100)),
            }
        }
    });
    let mut w = raw_session(e.addr);
    for (i, stream) in [Stream::Meters, Stream::Transport, Stream::Health]
        .into_iter()
        .enumerate()
    {
        w.send(
            Some(10 + i as u32),
            &Subscribe {
                stream,
                rate_hz: 120,
            },
        );
    }
    // Pre-encode every command of the window.
    const N: u32 = 2_000;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let id = 1_000 + i;
            match i % 4 {
                0 if i % 8 == 4 => frame(
                    Some(id),
                    &Connect(Edge {
                        from: 1,
                        from_port: 0,
                        to: 2,
                        to_port: 0,
                    }),
                ),
                0 => frame(Some(id), &Play {}),
                1 => frame(
                    Some(id),
                    &ParamSet {
                        node: 1,
                        param: 2,
                        value: 0.5,
                        ramp_ms: None,
                    },
                ),
                2 => frame(
                    Some(id),
                    &Ping {
                        nonce: i,
                        t_client_us: Some(1),
                        rt: i % 8 == 2,
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
    // Warm-up: the subscriptions' acks and a few hundred ms of telemetry (first-use paths).
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        pump(&mut stream, &mut dec, &mut Counts::default());
    }

    let mut counts = Counts::default();
    let before = ALLOCS.load(Ordering::SeqCst);
    let t0 = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        stream.write_all(f).unwrap();
        let id = 1_000 + i as u32;
        while counts.last_ref != Some(id) {
            pump(&mut stream, &mut dec, &mut counts);
        }
    }
    let elapsed = t0.elapsed();
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;

    let messages = u64::from(N) + counts.answers + counts.telemetry;
    eprintln!(
        "net_alloc: {allocs} allocations over {N} commands, {} answers, {} telemetry frames \
         ({messages} messages, {:.6} allocations/message) in {elapsed:?}",
        counts.answers,
        counts.telemetry,
        allocs as f64 / messages as f64
    );
    assert_eq!(counts.answers, u64::from(N), "every command answered once");
    assert!(
        counts.telemetry > 50,
        "telemetry flowed: {}",
        counts.telemetry
    );
    assert_eq!(allocs, 0, "allocations in the steady-state window");

    // Negative control 1: an allocation on this thread is counted.
    let before = ALLOCS.load(Ordering::SeqCst);
    let b = std::hint::black_box(Box::new(7u64));
    drop(b);
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
    // Connections come and go without allocating either: buffers are pooled per slot, so a
    // flood of refused or garbage connections costs no allocation on the network thread.
    let before = ALLOCS.load(Ordering::SeqCst);
    let extras: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(e.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let with_extras = ALLOCS.load(Ordering::SeqCst) - before;
    drop(extras);
    std::thread::sleep(Duration::from_millis(50));
    eprintln!("net_alloc: 3 extra connections cost {with_extras} allocations (Vec of streams: 1)");
    // Windows: mio allocates each registered socket's AFD state (`Arc<Mutex<SockState>>`,
    // mio's src/sys/windows/selector.rs), so there an accept costs a few allocations on the
    // network thread (never the audio thread); bounded at 3 per socket (measured: 7 for 3).
    let allowed = if cfg!(windows) { 1 + 3 * 3 } else { 1 };
    assert!(
        with_extras <= allowed,
        "accepting connections allocated: {with_extras} (1 is this test's Vec)"
    );
    // Negative control 2: another thread's allocations are counted too (the counter is
    // process-wide, so the network thread's would be).
    let before = ALLOCS.load(Ordering::SeqCst);
    std::thread::spawn(|| drop(std::hint::black_box(vec![1u8; 64])))
        .join()
        .unwrap();
    assert!(
        ALLOCS.load(Ordering::SeqCst) >= before + 2,
        "thread + vec seen"
    );
    stop.store(true, Ordering::Relaxed);
    control_thread.join().unwrap();
}

#[derive(Default)]
struct Counts {
    answers: u64,
    telemetry: u64,
    last_ref: Option<u32>,
}

/// Reads once into the fixed buffer and counts the frames (no allocation).
fn pump(s: &mut std::net::TcpStream, dec: &mut FrameDecoder<Vec<u8>>, c: &mut Counts) {
    let n = s.read(dec.spare()).expect("engine keeps the connection");
    assert!(n > 0, "engine closed the connection");
    dec.commit(n);
    while let Some(f) = dec.next_frame() {
        let f = f.unwrap();
        let env = Envelope::parse(f.payload).unwrap();
        match env.kind {
            Kind::Telemetry => c.telemetry += 1,
            Kind::Error if env.name == "error" => panic!("error answer in the window"),
            _ => {
                if let Some(r) = env.reference {
                    if r >= 1_000 {
                        c.answers += 1;
                    }
                    c.last_ref = Some(r);
                }
            }
        }
    }
}

//! Harness of the real-time proofs through the C ABI.
//!
//! The C++ engine callback of `capi/examples/signal_cpp/engine.h` (compiled by `build.rs`,
//! unchanged) runs on a simulated audio thread against a real server made by
//! `loophole_create`, while a client floods it with `param.set` commands over TCP. The harness
//! counts, over the measured callbacks, every heap operation of the audio thread (malloc,
//! calloc, realloc, free, memalign family interposed in this executable: C, C++ and Rust heap
//! use all pass there) and C++ `operator new` calls, and, with `seccomp`, every system call
//! (the `rt-tests` filter: only clock reads and sleeps are allowed).
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::c_void;
use std::net::SocketAddr;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::message::{ParamSet, ServerMessage};
use loophole_ipc_capi::*;
use rt_tests::seccomp;

extern "C" {
    fn probe_new(audio: *mut c_void, channels: i32, frames: i32) -> *mut c_void;
    fn probe_callback(probe: *mut c_void, mode: i32);
    fn probe_free(probe: *mut c_void);
    fn probe_thread_news() -> u64;
    fn probe_thread_heap_ops() -> u64;
    fn bench_cpp_callback(
        audio: *mut c_void,
        channels: *const *const f32,
        n_channels: u32,
        frames: u32,
        now_ns: u64,
    ) -> u32;
}

/// The benchmark's C++ callback (`cpp/probe.cpp`): begin, drain with a C++ lambda, planar
/// meters, end, all through the wrapper and the C ABI. Returns the commands answered.
///
/// # Safety
/// `audio` is a live handle used by this thread only; `channels` has `n_channels` pointers to
/// `frames` floats each.
pub unsafe fn cpp_callback(
    audio: *mut LoopholeAudio,
    channels: *const *const f32,
    n_channels: u32,
    frames: u32,
    now_ns: u64,
) -> u32 {
    // SAFETY: caller contract.
    unsafe { bench_cpp_callback(audio.cast(), channels, n_channels, frames, now_ns) }
}

/// What the callback does besides the engine's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The engine as shipped.
    Engine = 0,
    /// Negative control: it also allocates (`new int`).
    Allocates = 1,
    /// Negative control: it also makes a system call (`getppid`).
    Syscall = 2,
}

/// What happened.
#[derive(Debug, Default)]
pub struct Report {
    /// Measured callbacks.
    pub callbacks: u64,
    /// Heap operations of the audio thread in the measured section.
    pub heap_ops: u64,
    /// C++ `operator new` calls of the audio thread in the measured section.
    pub news: u64,
    /// The interposer was seen counting a Rust allocation on the audio thread (self-check).
    pub counter_live: bool,
    /// Seccomp traps in the measured section (`None` without seccomp or when unavailable).
    pub traps: Option<u64>,
    /// First trapped system call number.
    pub first_trap: i64,
    /// Why seccomp could not be used, if it was asked for.
    pub seccomp_unavailable: Option<String>,
    /// Commands the client sent and answers it got (ack or error), and duplicates/strays.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Answers with an id never sent or answered twice.
    pub bad_answers: u64,
    /// Commands answered while the measured section ran.
    pub answered_during_measure: u64,
}

struct SendPtr(*mut LoopholeAudio);
// SAFETY: the audio handle is used by one thread at a time (moved to the audio thread).
unsafe impl Send for SendPtr {}

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `callbacks` measured callbacks of the C++ engine under a command flood.
pub fn run(callbacks: u64, mode: Mode, use_seccomp: bool) -> Report {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut handler_err = None;
    if use_seccomp {
        if let Err(e) = seccomp::install_handler() {
            handler_err = Some(e.0);
        }
        seccomp::reset();
    }
    // SAFETY: plain ABI calls with valid pointers; the handles are freed once below.
    let (server, audio, control) = unsafe {
        let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let mut cfg = cfg.assume_init();
        cfg.meter_channels = 64;
        cfg.command_capacity = 64;
        cfg.reply_capacity = 40;
        cfg.drain_budget = 16;
        // The engine publishes taps 0-2 every callback: configure them, so the proof covers
        // loophole_audio_publish_tap's real path (not only its refusal).
        cfg.analysis_taps = 3;
        let (mut s, mut a, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        let rc = loophole_create(&cfg, &mut s, &mut a, &mut c, ptr::null_mut(), 0);
        assert_eq!(rc, LOOPHOLE_OK);
        (s, a, c)
    };
    // SAFETY: live server handle.
    let port = unsafe { loophole_server_port(server) };
    let measuring_done = Arc::new(AtomicBool::new(false));
    let client_done = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));

    let flood = {
        let (stop, measuring) = (Arc::clone(&measuring_done), Arc::clone(&measuring));
        std::thread::spawn(move || flood(port, &stop, &measuring))
    };
    let audio_thread = {
        let (done, client_done, measuring) = (
            Arc::clone(&measuring_done),
            Arc::clone(&client_done),
            Arc::clone(&measuring),
        );
        let audio = SendPtr(audio);
        let filter = use_seccomp && handler_err.is_none();
        std::thread::spawn(move || {
            let audio = audio;
            audio_main(
                audio.0,
                callbacks,
                mode,
                filter,
                &done,
                &client_done,
                &measuring,
            )
        })
    };
    let (sent, answered, bad, during) = flood.join().expect("flood thread");
    client_done.store(true, Ordering::Relaxed);
    let (mut report, probe) = audio_thread.join().expect("audio thread");
    if let Some(e) = handler_err {
        report.seccomp_unavailable = Some(e);
    }
    report.sent = sent;
    report.answered = answered;
    report.bad_answers = bad;
    report.answered_during_measure = during;
    // SAFETY: the audio thread has ended; each handle is freed once.
    unsafe {
        probe_free(probe as *mut c_void);
        loophole_server_free(server);
        loophole_control_free(control);
        loophole_audio_free(audio);
    }
    report
}

fn audio_main(
    audio: *mut LoopholeAudio,
    callbacks: u64,
    mode: Mode,
    use_seccomp: bool,
    done: &AtomicBool,
    client_done: &AtomicBool,
    measuring: &AtomicBool,
) -> (Report, usize) {
    let mut r = Report::default();
    // SAFETY: `audio` is live and used by this thread only; 64 channels of 64 frames.
    let probe = unsafe { probe_new(audio.cast(), 64, 64) };
    // Self-check: a Rust allocation on this thread passes through the interposer.
    // SAFETY: plain counter reads.
    let before = unsafe { probe_thread_heap_ops() };
    drop(std::hint::black_box(Box::new(7u64)));
    // SAFETY: as above.
    r.counter_live = unsafe { probe_thread_heap_ops() } >= before + 2;
    let tick = |i: u64| {
        // The endpoint's window (the C++ callback: begin .. end): only traps made inside it are
        // counted, and nothing is allowed there, not even a sleep (rt-tests' filter).
        seccomp::enter_window();
        // SAFETY: `probe` is live; this is its only thread.
        unsafe { probe_callback(probe, mode as i32) };
        seccomp::exit_window();
        if i % 64 == 63 {
            // Give the network thread room, as a device would, without a system call: the filter
            // allows clock reads only, so the driver busy-waits instead of sleeping.
            let until = std::time::Instant::now() + Duration::from_micros(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    };
    for i in 0..2_000 {
        tick(i); // warm-up: the first callbacks under traffic, before measuring
    }
    if use_seccomp {
        match seccomp::install_on_current_thread() {
            Ok(()) => {}
            Err(e) => r.seccomp_unavailable = Some(e.0),
        }
    }
    let filtered = use_seccomp && r.seccomp_unavailable.is_none();
    let traps0 = seccomp::window_traps();
    measuring.store(true, Ordering::Relaxed);
    // SAFETY: plain counter reads.
    let (heap0, news0) = unsafe { (probe_thread_heap_ops(), probe_thread_news()) };
    for i in 0..callbacks {
        tick(i);
    }
    // SAFETY: plain counter reads.
    let (heap1, news1) = unsafe { (probe_thread_heap_ops(), probe_thread_news()) };
    let traps1 = seccomp::window_traps();
    measuring.store(false, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    r.callbacks = callbacks;
    r.heap_ops = heap1 - heap0;
    r.news = news1 - news0;
    if filtered {
        r.traps = Some(traps1 - traps0);
        r.first_trap = seccomp::trapped_numbers().0;
    }
    // Keep answering until the client has its answers (not measured).
    let mut i = 0;
    while !client_done.load(Ordering::Relaxed) {
        tick(i);
        i += 1;
    }
    (r, probe as usize)
}

/// Floods `param.set` (every 7th out of range: an error answer) keeping up to 512 in flight;
/// returns (sent, answered, bad answers, answered while measuring).
fn flood(port: u16, stop: &AtomicBool, measuring: &AtomicBool) -> (u64, u64, u64, u64) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Client::connect(addr, &ClientOptions::default()).expect("connect");
    let mut outstanding = HashSet::new();
    let (mut sent, mut answered, mut bad, mut during) = (0u64, 0u64, 0u64, 0u64);
    let mut next_id = 1_000u32;
    let mut take = |c: &mut Client, outstanding: &mut HashSet<u32>, wait: Duration| -> bool {
        match c.recv_timeout(wait) {
            Ok(Some(rx)) => {
                if matches!(rx.message, ServerMessage::Ack(_) | ServerMessage::Error(_)) {
                    match rx.reference {
                        Some(id) if outstanding.remove(&id) => {
                            answered += 1;
                            if measuring.load(Ordering::Relaxed) {
                                during += 1;
                            }
                        }
                        _ => bad += 1,
                    }
                }
                true
            }
            Ok(None) => false,
            Err(e) => panic!("client: {e:?}"),
        }
    };
    while !stop.load(Ordering::Relaxed) {
        while outstanding.len() < 512 {
            let value = if next_id % 7 == 3 { 9.0 } else { 0.5 };
            let body = ParamSet {
                node: 2,
                param: 0,
                value,
                ramp_ms: Some(1.0),
            };
            c.send_with_id(next_id, &body).expect("send");
            outstanding.insert(next_id);
            next_id += 1;
            sent += 1;
        }
        while take(&mut c, &mut outstanding, Duration::from_micros(200)) {}
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outstanding.is_empty() && Instant::now() < deadline {
        take(&mut c, &mut outstanding, Duration::from_millis(20));
    }
    (sent, answered, bad, during)
}

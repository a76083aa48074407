//! The simulated audio device and the process plumbing that needs `libc`: real-time scheduling,
//! sleeping to absolute deadlines on `CLOCK_MONOTONIC`, and stop signals.
//!
//! This is the only module of the `signal` example with `unsafe` code; every block is a plain
//! libc call with a `// SAFETY:` note.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// How far behind schedule (in periods) the device catches up by running callbacks back to
/// back, like a device with a ring of this many periods. Beyond it, blocks are dropped.
pub const MAX_CATCH_UP: u64 = 4;

/// The device's schedule.
#[derive(Clone, Copy, Debug)]
pub struct DeviceConfig {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Frames per callback.
    pub block_size: u32,
    /// Ask for `SCHED_FIFO`.
    pub realtime: bool,
    /// `SCHED_FIFO` priority asked for (clamped to the system's range).
    pub rt_priority: i32,
    /// Speed of the device's clock relative to `CLOCK_MONOTONIC` (1.0 = exact). A testing aid:
    /// a device that runs slow or fast.
    pub speed: f64,
}

/// What the device hands each callback.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// `CLOCK_MONOTONIC` time (ns) by which this block must be finished (the next period's
    /// start). A callback that ends later is an xrun.
    pub due_ns: u64,
    /// Blocks the device dropped just before this one because the thread fell more than
    /// [`MAX_CATCH_UP`] periods behind (each one is an xrun too).
    pub dropped: u64,
}

/// Counters kept by the device loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceStats {
    /// Callbacks run.
    pub callbacks: u64,
    /// Blocks dropped because the thread fell too far behind.
    pub dropped: u64,
}

/// `CLOCK_MONOTONIC` in nanoseconds (vDSO: no system call).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute: no drift, retried on EINTR).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// Asks for `SCHED_FIFO` at `priority` (clamped to the system's range) for the calling thread.
/// Returns the priority granted, or the OS error (typically `EPERM` without `CAP_SYS_NICE` or
/// an `rtprio` limit).
pub fn request_realtime(priority: i32) -> io::Result<i32> {
    // SAFETY: plain queries with a valid policy constant.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    let priority = priority.clamp(min, max);
    // SAFETY: sched_param is plain old data; all-zero is a valid value.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: `pthread_self()` is the calling thread; `param` is a valid sched_param.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(priority)
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Runs the device until `stop` is set: sleeps to each period's absolute start and calls
/// `callback` once per block. Falls behind by at most [`MAX_CATCH_UP`] periods (then runs
/// callbacks back to back); further behind, it drops blocks and says so in [`Slot::dropped`].
pub fn run(cfg: &DeviceConfig, stop: &AtomicBool, mut callback: impl FnMut(Slot)) -> DeviceStats {
    let ns_per_block =
        f64::from(cfg.block_size) * 1e9 / (f64::from(cfg.sample_rate.max(1)) * cfg.speed);
    let period = ns_per_block as u64;
    let t0 = mono_ns();
    let start = |k: u64| t0 + (k as f64 * ns_per_block) as u64;
    let mut stats = DeviceStats::default();
    let mut k = 0u64;
    let mut dropped = 0;
    while !stop.load(Ordering::Relaxed) {
        sleep_until(start(k));
        callback(Slot {
            due_ns: start(k + 1),
            dropped,
        });
        stats.callbacks += 1;
        k += 1;
        let now = mono_ns();
        let behind = now.saturating_sub(start(k)) / period.max(1);
        dropped = if behind > MAX_CATCH_UP { behind } else { 0 };
        k += dropped;
        stats.dropped += dropped;
    }
    stats
}

/// The stop signal received (`SIGINT` or `SIGTERM`), 0 if none. Written only by the handler.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe; the handler does nothing else.
    STOP_SIGNAL.store(sig, Ordering::Relaxed);
}

/// The stop signal received so far, if any.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// A signal's name for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it fully.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in the calling thread. Threads spawned afterwards inherit the mask, so
/// call it before starting the network and audio threads: the signals then only reach the
/// thread that calls [`unblock_and_catch_stop_signals`], and never interrupt the audio thread.
pub fn block_stop_signals() {
    let set = stop_set();
    // SAFETY: valid set pointer; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Installs the SIGINT/SIGTERM handler (it only sets an atomic) and unblocks both signals in the
/// calling thread.
pub fn unblock_and_catch_stop_signals() {
    // SAFETY: sigaction is plain data; the handler is an `extern "C" fn(c_int)` that only does
    // an atomic store (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    let set = stop_set();
    // SAFETY: valid set pointer; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

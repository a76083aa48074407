//! The simulated audio device. The OS plumbing it needs (clock, absolute-deadline sleep,
//! real-time priority, stop signals) is in `platform.rs`, one room per OS.

use std::sync::atomic::{AtomicBool, Ordering};

#[path = "platform.rs"]
mod platform;

pub use platform::{
    block_stop_signals, mono_ns, request_realtime, signal_name, sleep_until, stop_signal,
    unblock_and_catch_stop_signals,
};

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

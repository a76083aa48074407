//! Taps in the flood simulation: the audio thread publishes the first `taps` rendered channels
//! to taps every callback, and a third thread (the analysis worker) reads them at an uneven
//! pace (bursts, then stalls long enough to be overrun), checking every returned sample against
//! the value the render produced at that index.

use crate::sim::{SimOptions, CHANNELS, FRAMES};
use loophole_ipc::rt::{AudioEndpoint, TapReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Samples per tap ring in the simulation (64 callbacks of 64 frames).
pub const TAP_CAPACITY: usize = 4096;

/// Taps in the simulation and an optional deliberate fault (the negative controls).
#[derive(Clone, Debug, Default)]
pub struct TapSim {
    /// Channels `0..taps` are published to taps `0..taps` every callback (`0` = no taps).
    pub taps: usize,
    /// What the audio thread does wrong, if anything.
    pub fault: TapFault,
}

/// A deliberate defect of the audio side's tap publishing, for negative controls.
#[derive(Clone, Debug, Default)]
pub enum TapFault {
    /// The real path: `publish_tap` only.
    #[default]
    None,
    /// The obvious heap design: copy each block into a fresh `Vec` (as a channel of
    /// `Vec<f32>` would) before publishing.
    CopyToVec,
    /// Wakes the consumer after publishing (one eventfd `write(2)` per callback).
    WakeConsumer(Arc<mio::Waker>),
    /// Publishes a wrong first sample every this many callbacks (the checker must see it).
    Corrupt {
        /// Period in callbacks.
        every: u64,
    },
}

/// What the tap reader saw.
#[derive(Clone, Debug, Default)]
pub struct TapReport {
    /// Samples returned by `read`, over all taps.
    pub returned: u64,
    /// Samples counted missed (overrun), over all taps.
    pub missed: u64,
    /// Samples the audio thread published, over all taps (read at the end).
    pub published: u64,
    /// Reads that returned at least one sample.
    pub reads: u64,
    /// Reads that reported missed samples.
    pub overruns: u64,
    /// The first returned sample that differs from what was rendered at its index.
    pub mismatch: Option<String>,
    /// Returned samples that differ from what was rendered.
    pub mismatches: u64,
}

/// Options for the flood simulation with `taps` taps and `fault`.
pub fn options(taps: usize, fault: TapFault, seccomp: bool) -> SimOptions {
    let mut opts = SimOptions {
        seccomp,
        ..SimOptions::default()
    };
    opts.cfg = opts.cfg.with_taps(taps, TAP_CAPACITY);
    opts.taps = TapSim { taps, fault };
    opts
}

/// The value `render` (in `sim.rs`) writes at frame `i` of channel `ch` in callback `n`.
/// Must stay the same expression as there (same float operations, same bits).
fn rendered(n: u64, ch: usize, i: usize) -> f32 {
    let g = ((n % 100) as f32) / 100.0;
    g * (((i + ch) % 16) as f32 / 16.0 - 0.5)
}

/// Audio side, called once per callback after `render` (inside the measured section).
#[inline]
pub(crate) fn publish(
    audio: &mut AudioEndpoint,
    blocks: &[[f32; FRAMES]; CHANNELS],
    n: u64,
    sim: &TapSim,
) {
    for (tap, block) in blocks.iter().take(sim.taps).enumerate() {
        let result = match &sim.fault {
            TapFault::Corrupt { every } if n.is_multiple_of(*every) => {
                let mut bad = *block;
                bad[0] = 1.0e6;
                audio.publish_tap(tap, &bad)
            }
            TapFault::CopyToVec => {
                let copy = std::hint::black_box(block.to_vec());
                audio.publish_tap(tap, &copy)
            }
            _ => audio.publish_tap(tap, block),
        };
        debug_assert!(result.is_ok());
    }
    if let TapFault::WakeConsumer(waker) = &sim.fault {
        let _ = waker.wake();
    }
}

/// Starts the analysis worker: reads every tap until `stop`, then drains them and reports.
pub(crate) fn spawn_reader(
    mut reader: TapReader,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<TapReport> {
    std::thread::spawn(move || {
        let mut r = TapReport::default();
        let mut out = vec![0.0f32; reader.capacity()];
        let mut round = 0u64;
        while !stop.load(Ordering::Acquire) {
            round += 1;
            for tap in 0..reader.taps() {
                read_once(&mut reader, tap, &mut out, &mut r);
            }
            // Uneven pace: mostly every 100 µs; every 64 rounds a stall that lasts until the
            // writer has lapped the ring (whatever the machine's speed), so overruns happen.
            if round.is_multiple_of(64) {
                stall_until_lapped(&reader, &stop);
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        for tap in 0..reader.taps() {
            while read_once(&mut reader, tap, &mut out, &mut r) > 0 {}
            r.published += reader.published(tap).unwrap_or(0);
        }
        r
    })
}

/// Sleeps until tap 0's writer has published two rings' worth since the call (or `stop`, or
/// 200 ms: a stalled writer must not hang the test).
fn stall_until_lapped(reader: &TapReader, stop: &AtomicBool) {
    let start = reader.published(0).unwrap_or(0);
    let lap = 2 * reader.capacity() as u64;
    let deadline = std::time::Instant::now() + Duration::from_millis(200);
    while !stop.load(Ordering::Acquire)
        && reader.published(0).unwrap_or(0) < start + lap
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn read_once(reader: &mut TapReader, tap: usize, out: &mut [f32], r: &mut TapReport) -> usize {
    let Ok(got) = reader.read(tap, out) else {
        return 0;
    };
    r.returned += got.samples as u64;
    r.missed += got.missed;
    r.reads += u64::from(got.samples > 0);
    r.overruns += u64::from(got.missed > 0);
    for (k, &x) in out[..got.samples].iter().enumerate() {
        let index = got.first + k as u64;
        let (n, i) = (index / FRAMES as u64, (index % FRAMES as u64) as usize);
        let want = rendered(n, tap, i);
        if x.to_bits() != want.to_bits() {
            r.mismatches += 1;
            r.mismatch.get_or_insert_with(|| {
                format!("tap {tap} sample {index}: read {x}, rendered {want}")
            });
        }
    }
    got.samples
}

/// Taps the tap tests publish (channels `0..TAPS`).
pub const TAPS: usize = 8;

/// The test engine of the tap tests (the flood's deterministic outcomes).
pub fn engine(cmd: &loophole_ipc::rt::RtCommand) -> loophole_ipc::rt::Outcome {
    crate::sim::expected_outcome(cmd)
}

/// Asserts that the tap stream was really exercised (concurrently, with overruns) and that it
/// accounts exactly: every published sample was returned or counted missed, once.
pub fn assert_taps_exercised(r: &crate::SimReport) {
    let t = &r.taps;
    assert_eq!(
        t.published,
        r.callbacks * TAPS as u64 * FRAMES as u64,
        "published count"
    );
    assert_eq!(
        t.returned + t.missed,
        t.published,
        "every sample returned or counted missed exactly once"
    );
    assert!(t.reads > 1000, "too few concurrent reads: {}", t.reads);
    assert!(t.overruns > 0, "the slow reader was never overrun");
    assert!(t.returned > 100_000, "too few samples read: {}", t.returned);
}

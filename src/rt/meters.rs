//! Wait-free peak/RMS meter accumulation, double-banked with a two-counter hand-over.
//!
//! # Protocol
//!
//! There are two banks of per-channel accumulators (peak-hold, sum of squares, sample count).
//! At any time the audio thread (the [`MeterWriter`]) owns one bank and the network thread
//! (the [`MeterReader`]) owns the other. Ownership changes hands through two counters:
//!
//! * `request` — written only by the reader. Incrementing it asks the writer to switch to bank
//!   `request & 1`, which the reader has just read out and zeroed.
//! * `ack` — written only by the writer. At the start of each callback ([`MeterWriter::begin`])
//!   the writer loads `request` (Acquire); if it changed, the writer switches banks and stores
//!   the new value in `ack` (Release).
//!
//! The reader ([`MeterReader::take`]) acts only when `ack == request`: then the writer is on bank
//! `request & 1` and will not touch the other bank until the reader increments `request` again,
//! so the reader may read and zero it. The Release/Acquire pairs order the zeroing before the
//! writer's first write and the writer's last write before the reader's read. All fields are
//! atomics accessed `Relaxed` (no `unsafe`); the counters carry the ordering.
//!
//! # What this guarantees, and what it costs
//!
//! * Every block published lands in exactly one interval: no sample is lost or counted twice,
//!   so the peak a client sees is the true peak of its interval.
//! * An interval is consistent across all channels and fields (no torn read: peak, sum and
//!   count of every channel cover exactly the same callbacks).
//! * The writer does one Acquire load per callback, plus one Release store when a switch is
//!   pending, and plain loads/stores on its own bank. Wait-free, no RMW instruction.
//! * Latency: `take` returns the interval that *ended* at the previous `take` (more precisely,
//!   at the first callback after it), so values are one take period old. If no callback ran
//!   since the previous `take`, `take` returns `0` and the interval keeps accumulating.
//!
//! This protocol is model-checked with loom (`rt-tests/tests/loom_meters.rs`).

use super::sync::{Arc, AtomicU32, AtomicU64, Ordering};
use super::MAX_METER_CHANNELS;

#[derive(Debug, Default)]
struct Cell {
    /// Peak of |x| as `f32` bits (non-negative floats order like their bits).
    peak: AtomicU32,
    /// Sum of x² as `f64` bits.
    sum_sq: AtomicU64,
    /// Number of samples accumulated.
    count: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    banks: [Box<[Cell]>; 2],
    request: AtomicU32,
    ack: AtomicU32,
}

/// The audio thread's half of a meter bank. Wait-free; never allocates.
#[derive(Debug)]
pub struct MeterWriter {
    shared: Arc<Shared>,
    epoch: u32,
    channels: usize,
}

/// The network thread's half of a meter bank. Never blocks; never allocates.
#[derive(Debug)]
pub struct MeterReader {
    shared: Arc<Shared>,
    channels: usize,
}

/// Creates a meter bank for `channels` channels (clamped to `1..=MAX_METER_CHANNELS`).
///
/// Allocates the two banks; this is the only allocation. Dropping the last half frees them.
pub fn meter_bank(channels: usize) -> (MeterWriter, MeterReader) {
    let channels = channels.clamp(1, MAX_METER_CHANNELS);
    let bank = || {
        (0..channels)
            .map(|_| Cell::default())
            .collect::<Box<[Cell]>>()
    };
    let shared = Arc::new(Shared {
        banks: [bank(), bank()],
        request: AtomicU32::new(0),
        ack: AtomicU32::new(0),
    });
    let writer = MeterWriter {
        shared: Arc::clone(&shared),
        epoch: 0,
        channels,
    };
    (writer, MeterReader { shared, channels })
}

impl MeterWriter {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Call once at the start of each callback: hands the current bank over if the reader
    /// asked for it. One Acquire load; one Release store when a hand-over is pending.
    #[inline]
    pub fn begin(&mut self) {
        let request = self.shared.request.load(Ordering::Acquire);
        if request != self.epoch {
            self.epoch = request;
            self.shared.ack.store(request, Ordering::Release);
        }
    }

    /// Adds one block of samples of `channel`. Out-of-range channels are ignored.
    ///
    /// NaN samples are ignored by the peak and make the interval's RMS NaN (the client then
    /// sees that the engine produced NaN).
    #[inline]
    pub fn publish(&mut self, channel: usize, block: &[f32]) {
        let (peak, sum_sq) = block_levels(block);
        self.publish_levels(channel, peak, sum_sq, block.len() as u64);
    }

    /// Adds levels the engine computed itself: `peak` = max |x|, `sum_sq` = Σx² over `frames`
    /// samples. O(1). Out-of-range channels are ignored.
    #[inline]
    pub fn publish_levels(&mut self, channel: usize, peak: f32, sum_sq: f64, frames: u64) {
        let bank = &self.shared.banks[(self.epoch & 1) as usize];
        let Some(cell) = bank.get(channel) else {
            return;
        };
        // Only this thread writes this bank until the next hand-over: plain load + store.
        let old_peak = f32::from_bits(cell.peak.load(Ordering::Relaxed));
        if peak > old_peak {
            cell.peak.store(peak.to_bits(), Ordering::Relaxed);
        }
        let old_sum = f64::from_bits(cell.sum_sq.load(Ordering::Relaxed));
        cell.sum_sq
            .store((old_sum + sum_sq).to_bits(), Ordering::Relaxed);
        let old_count = cell.count.load(Ordering::Relaxed);
        cell.count
            .store(old_count.wrapping_add(frames), Ordering::Relaxed);
    }
}

impl MeterReader {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Reads out and resets the completed interval into `peak` and `rms` (linear, not dB),
    /// then starts a new interval at the writer's next callback.
    ///
    /// Returns the number of channels written (`min(channels, peak.len(), rms.len())`), or `0`
    /// when the writer has not run a callback since the previous `take` (nothing completed;
    /// the buffers are untouched). A channel with no samples in the interval reads `0.0`.
    pub fn take(&mut self, peak: &mut [f32], rms: &mut [f32]) -> usize {
        let request = self.shared.request.load(Ordering::Relaxed);
        if self.shared.ack.load(Ordering::Acquire) != request {
            return 0;
        }
        let bank = &self.shared.banks[(request.wrapping_add(1) & 1) as usize];
        let n = self.channels.min(peak.len()).min(rms.len());
        for (i, cell) in bank.iter().enumerate() {
            let p = f32::from_bits(cell.peak.swap(0, Ordering::Relaxed));
            let s = f64::from_bits(cell.sum_sq.swap(0, Ordering::Relaxed));
            let c = cell.count.swap(0, Ordering::Relaxed);
            if i < n {
                peak[i] = p;
                rms[i] = if c == 0 {
                    0.0
                } else {
                    (s / c as f64).sqrt() as f32
                };
            }
        }
        self.shared
            .request
            .store(request.wrapping_add(1), Ordering::Release);
        n
    }
}

/// Peak of |x| and Σx² of one block, in 8 independent lanes so the compiler can vectorise.
#[inline]
fn block_levels(block: &[f32]) -> (f32, f64) {
    let mut peak = [0.0f32; 8];
    let mut sum = [0.0f32; 8];
    let chunks = block.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            let x = chunk[lane];
            let a = x.abs();
            peak[lane] = if a > peak[lane] { a } else { peak[lane] };
            sum[lane] += x * x;
        }
    }
    for (lane, &x) in tail.iter().enumerate() {
        let a = x.abs();
        peak[lane] = if a > peak[lane] { a } else { peak[lane] };
        sum[lane] += x * x;
    }
    let p = peak.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let s = sum.iter().map(|&v| f64::from(v)).sum();
    (p, s)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn intervals_hand_over_and_reset() {
        let (mut w, mut r) = meter_bank(2);
        let (mut peak, mut rms) = ([9.0; 2], [9.0; 2]);
        // First take: the empty interval before any callback.
        w.begin();
        assert_eq!(r.take(&mut peak, &mut rms), 2);
        assert_eq!((peak, rms), ([0.0; 2], [0.0; 2]));
        // No callback since: nothing completed.
        assert_eq!(r.take(&mut peak, &mut rms), 0);
        w.begin(); // hand-over 1: the writer moves to bank 1
        w.publish(0, &[0.5, -1.0, 0.0, 0.0]);
        w.publish(1, &[0.25; 3]);
        // Completed interval: construction .. hand-over 1 (nothing published).
        assert_eq!(r.take(&mut peak, &mut rms), 2);
        assert_eq!(peak, [0.0; 2]);
        w.begin(); // hand-over 2: the data above is in the completed bank now
        w.publish(0, &[0.1]);
        assert_eq!(r.take(&mut peak, &mut rms), 2);
        assert_eq!(peak, [1.0, 0.25]);
        assert!((rms[0] - (1.25f32 / 4.0).sqrt()).abs() < 1e-6);
        assert!((rms[1] - 0.25).abs() < 1e-6);
        w.begin();
        assert_eq!(r.take(&mut peak, &mut rms), 2);
        assert_eq!(peak, [0.1, 0.0]);
    }

    #[test]
    fn block_levels_matches_naive() {
        let block: [f32; 19] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let (p, s) = block_levels(&block);
        let np = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let ns: f64 = block.iter().map(|&x| f64::from(x * x)).sum();
        assert_eq!(p, np);
        assert!((s - ns).abs() < 1e-5);
    }
}

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
//! The reader ([`MeterReader::collect`]) acts only when `ack == request`: then the writer is on bank
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
//! * Freshness: a hand-over completes at the writer's first callback after the reader asked.
//!   The reader asks again every time it collects ([`MeterReader::collect`], also called by
//!   [`MeterReader::take`]) and folds completed intervals into reader-local accumulators, so a
//!   reader that collects at every wake-up sees data about one callback old, and `take` at any
//!   rate returns everything since the previous `take` (max of peaks, sums of Σx² and counts).
//!   If no callback ran since the previous `take`, `take` returns `0` and nothing is lost.
//!
//! The same hand-over carries each interval's highest DSP load (one more cell per bank).
//!
//! This protocol is model-checked with loom (`rt-tests/tests/loom_meters.rs`).

use super::sync::{Arc, AtomicU32, AtomicU64, Ordering, ACQUIRE, RELEASE};
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
    /// Per bank: highest DSP load (f32 bits) of the callbacks that wrote this bank.
    load_max: [AtomicU32; 2],
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
    /// Completed intervals folded in by `collect` since the last `take` (reader-local).
    acc: Folded,
    /// Highest DSP load folded in since the last `take_load_max` (reader-local).
    load_acc: Option<f32>,
}

#[derive(Debug)]
struct Folded {
    peak: [f32; MAX_METER_CHANNELS],
    sum_sq: [f64; MAX_METER_CHANNELS],
    count: [u64; MAX_METER_CHANNELS],
    any: bool,
}

impl Folded {
    const EMPTY: Folded = Folded {
        peak: [0.0; MAX_METER_CHANNELS],
        sum_sq: [0.0; MAX_METER_CHANNELS],
        count: [0; MAX_METER_CHANNELS],
        any: false,
    };
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
        load_max: [AtomicU32::new(0), AtomicU32::new(0)],
        request: AtomicU32::new(0),
        ack: AtomicU32::new(0),
    });
    let writer = MeterWriter {
        shared: Arc::clone(&shared),
        epoch: 0,
        channels,
    };
    let reader = MeterReader {
        shared,
        channels,
        acc: Folded::EMPTY,
        load_acc: None,
    };
    (writer, reader)
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
        let request = self.shared.request.load(ACQUIRE);
        if request != self.epoch {
            self.epoch = request;
            self.shared.ack.store(request, RELEASE);
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

    /// Records one callback's DSP load in the current interval (the interval's max is kept).
    #[inline]
    pub fn publish_load(&mut self, load: f32) {
        let cell = &self.shared.load_max[(self.epoch & 1) as usize];
        if load > f32::from_bits(cell.load(Ordering::Relaxed)) {
            cell.store(load.to_bits(), Ordering::Relaxed);
        }
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

    /// Folds the writer's completed interval (if the writer has handed it over since the
    /// last call) into this reader's local accumulators and asks the writer for the next one.
    /// Returns whether anything was folded.
    ///
    /// Call it at every wake-up (e.g. just after each callback ends) to keep the meters one
    /// callback fresh; [`take`](Self::take) calls it too. Cost: three atomic swaps per channel
    /// when a hand-over completed, one atomic load otherwise. Never blocks.
    pub fn collect(&mut self) -> bool {
        let request = self.shared.request.load(Ordering::Relaxed);
        if self.shared.ack.load(ACQUIRE) != request {
            return false;
        }
        let bank = &self.shared.banks[(request.wrapping_add(1) & 1) as usize];
        for (i, cell) in bank.iter().enumerate() {
            let p = f32::from_bits(cell.peak.swap(0, Ordering::Relaxed));
            let s = f64::from_bits(cell.sum_sq.swap(0, Ordering::Relaxed));
            let c = cell.count.swap(0, Ordering::Relaxed);
            if p > self.acc.peak[i] {
                self.acc.peak[i] = p;
            }
            self.acc.sum_sq[i] += s;
            self.acc.count[i] = self.acc.count[i].wrapping_add(c);
        }
        self.acc.any = true;
        let bank_index = (request.wrapping_add(1) & 1) as usize;
        let load = f32::from_bits(self.shared.load_max[bank_index].swap(0, Ordering::Relaxed));
        self.load_acc = Some(
            self.load_acc
                .map_or(load, |m| if load > m { load } else { m }),
        );
        self.shared.request.store(request.wrapping_add(1), RELEASE);
        true
    }

    /// Reads out and resets everything accumulated since the previous `take` into `peak` and
    /// `rms` (linear, not dB). Calls [`collect`](Self::collect) first.
    ///
    /// Returns the number of channels written (`min(channels, peak.len(), rms.len())`), or `0`
    /// when no interval completed since the previous `take` (the writer ran no callback; the
    /// buffers are untouched and nothing is lost). A channel with no samples reads `0.0`.
    ///
    /// Freshness: the values end at the last hand-over, i.e. at the first callback after the
    /// last `collect`/`take`. With `collect` at every wake-up that is about one callback old;
    /// with `take` alone it is one `take` period old.
    pub fn take(&mut self, peak: &mut [f32], rms: &mut [f32]) -> usize {
        let mut sum_sq = [0.0f64; MAX_METER_CHANNELS];
        let mut count = [0u64; MAX_METER_CHANNELS];
        let n = self.take_raw(peak, &mut sum_sq, &mut count).min(rms.len());
        for i in 0..n {
            rms[i] = if count[i] == 0 {
                0.0
            } else {
                (sum_sq[i] / count[i] as f64).sqrt() as f32
            };
            // JSON has no NaN or infinity, and a meter should show such a fault loudly: a
            // channel that carried a non-finite sample reports f32::MAX for both values.
            if !peak[i].is_finite() || !rms[i].is_finite() || sum_sq[i].is_nan() {
                peak[i] = f32::MAX;
                rms[i] = f32::MAX;
            }
        }
        n
    }

    /// The highest DSP load of the callbacks since the previous `take_load_max` (same hand-over
    /// and freshness as the meters; calls [`collect`](Self::collect) first), or `None` if no
    /// interval completed since then.
    pub fn take_load_max(&mut self) -> Option<f32> {
        self.collect();
        self.load_acc.take()
    }

    /// Like [`take`](Self::take) but gives the raw accumulators: peak, Σx² and the number of
    /// samples per channel. Returns the channels written (limited by the shortest slice), or
    /// `0` if nothing completed since the previous take.
    pub fn take_raw(&mut self, peak: &mut [f32], sum_sq: &mut [f64], count: &mut [u64]) -> usize {
        self.collect();
        if !self.acc.any {
            return 0;
        }
        let n = self
            .channels
            .min(peak.len())
            .min(sum_sq.len())
            .min(count.len());
        peak[..n].copy_from_slice(&self.acc.peak[..n]);
        sum_sq[..n].copy_from_slice(&self.acc.sum_sq[..n]);
        count[..n].copy_from_slice(&self.acc.count[..n]);
        self.acc = Folded::EMPTY;
        n
    }
}

/// Peak of |x| and Σx² of one block, in 8 independent lanes so the compiler can vectorise.
///
/// Squares and sums in `f64`: in `f32`, `x * x` is subnormal for |x| < 1.1e-19 (release tails,
/// reverb decay), which costs a microcode assist per operation on x86 (2.6x slower meters on
/// quiet signals, measured in `benches/rt_callback.rs`), rounds to 0 below about 1e-23, and
/// overflows to infinity above 1.8e19. In `f64` the square of any finite `f32` is a normal
/// number (or 0), so the cost does not depend on the signal level. The price: half the SIMD
/// lanes, about 1.5x the `f32` cost on every signal (measured; a variant that scales each block
/// by a power of two and sums in `f32` was slower still).
#[inline]
fn block_levels(block: &[f32]) -> (f32, f64) {
    let mut peak = [0.0f32; 8];
    let mut sum = [0.0f64; 8];
    let chunks = block.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            let x = chunk[lane];
            let a = x.abs();
            peak[lane] = if a > peak[lane] { a } else { peak[lane] };
            let d = f64::from(x);
            sum[lane] += d * d;
        }
    }
    for (lane, &x) in tail.iter().enumerate() {
        let a = x.abs();
        peak[lane] = if a > peak[lane] { a } else { peak[lane] };
        let d = f64::from(x);
        sum[lane] += d * d;
    }
    let p = peak.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let s = sum.iter().sum();
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
    fn collect_folds_intervals_until_take() {
        let (mut w, mut r) = meter_bank(1);
        let (mut peak, mut rms) = ([0.0; 1], [0.0; 1]);
        assert!(r.collect()); // initial empty interval; asks for a hand-over
        assert!(!r.collect(), "no callback since: nothing to fold");
        w.begin();
        w.publish(0, &[0.5, 0.5]);
        assert!(
            r.collect(),
            "folds the (empty) interval before that callback"
        );
        w.begin(); // hands over the bank holding 0.5, 0.5
        w.publish(0, &[1.0, 1.0]);
        assert!(r.collect());
        w.begin();
        assert!(r.collect());
        assert_eq!(r.take(&mut peak, &mut rms), 1);
        assert_eq!(peak[0], 1.0, "max over the folded intervals");
        assert!(
            (rms[0] - (2.5f32 / 4.0).sqrt()).abs() < 1e-6,
            "rms over all four samples"
        );
        assert_eq!(r.take(&mut peak, &mut rms), 0, "nothing new");
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

    /// Completes the writer's current interval: after this, `take` includes everything
    /// published before the call.
    fn hand_over(w: &mut MeterWriter, r: &mut MeterReader) {
        r.collect(); // asks for the writer's bank
        w.begin(); // hands it over
    }

    /// Regression (fails on the f32 accumulation of the old code): quiet signals keep their
    /// level instead of flushing to 0 (1e-23 squared is below the smallest f32 subnormal).
    #[test]
    fn quiet_signal_keeps_its_rms() {
        let (mut w, mut r) = meter_bank(1);
        let (mut peak, mut rms) = ([0.0; 1], [0.0; 1]);
        w.publish(0, &[1e-23; 64]);
        hand_over(&mut w, &mut r);
        assert_eq!(r.take(&mut peak, &mut rms), 1);
        assert_eq!(peak[0], 1e-23);
        let rel = (rms[0] / 1e-23 - 1.0).abs();
        assert!(
            rel < 1e-5,
            "rms of a 1e-23 signal: {} (rel err {rel})",
            rms[0]
        );
    }

    /// Regression (fails on the old code, whose `x * x` overflowed to infinity in f32 and so
    /// reported the fault marker `f32::MAX`): a loud but finite signal has a finite RMS.
    #[test]
    fn loud_finite_signal_is_not_a_fault() {
        let (mut w, mut r) = meter_bank(1);
        let (mut peak, mut rms) = ([0.0; 1], [0.0; 1]);
        w.publish(0, &[1e20; 16]);
        hand_over(&mut w, &mut r);
        assert_eq!(r.take(&mut peak, &mut rms), 1);
        assert_eq!(peak[0], 1e20);
        assert!((rms[0] / 1e20 - 1.0).abs() < 1e-5, "rms {}", rms[0]);
        // Negative control: a real non-finite sample still shows as the fault marker.
        w.publish(0, &[f32::INFINITY]);
        hand_over(&mut w, &mut r);
        assert_eq!(r.take(&mut peak, &mut rms), 1);
        assert_eq!((peak[0], rms[0]), (f32::MAX, f32::MAX));
    }

    /// A `meters` frame of the maximum channel count, every value at the longest encoding
    /// (`1.1754944e-38`, 13 characters), fits the default `max_frame` with room to spare.
    #[test]
    fn a_full_meters_frame_fits_the_default_max_frame() {
        use crate::frame::DEFAULT_MAX_FRAME;
        use crate::message::{encode_frame, Meters};
        let longest = f32::MIN_POSITIVE;
        let body = Meters {
            peak: heapless::Vec::from_slice(&[longest; MAX_METER_CHANNELS]).unwrap(),
            rms: heapless::Vec::from_slice(&[longest; MAX_METER_CHANNELS]).unwrap(),
        };
        let mut out = vec![0u8; 8 + DEFAULT_MAX_FRAME as usize];
        let n = encode_frame(None, &body, &mut out, DEFAULT_MAX_FRAME).expect("fits");
        const { assert!(MAX_METER_CHANNELS >= 512) };
        assert!(
            n > 2 * MAX_METER_CHANNELS * 13,
            "every value encoded: {n} bytes"
        );
        assert!(
            n <= (DEFAULT_MAX_FRAME as usize) / 4,
            "{n} bytes: less than a quarter"
        );
    }

    /// `block_levels` against an `f64` reference across levels: normal, quiet, subnormal,
    /// near `f32::MAX`, zeros; and a NaN sample poisons the sum.
    #[test]
    fn block_levels_match_f64_at_every_level() {
        let wave: [f32; 19] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        for scale in [1.0f32, 1e-20, 1e-40, 3e38, 0.0] {
            let block: Vec<f32> = wave.iter().map(|&x| x * scale).collect();
            let (p, s) = block_levels(&block);
            let np = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let ns: f64 = block.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert_eq!(p, np, "peak at scale {scale}");
            assert!(
                (s - ns).abs() <= ns * 1e-9,
                "sum at scale {scale}: {s} vs {ns}"
            );
        }
        let (_, s) = block_levels(&[0.5, f32::NAN, 0.25]);
        assert!(s.is_nan(), "a NaN sample poisons the sum");
    }
}

//! Wait-free taps: fixed-size rings of recent samples, written by the audio thread and read
//! by a non-real-time consumer (the scope and spectrum streams of issue 14).
//!
//! # Policy: overwrite the oldest, count what the reader missed
//!
//! A tap keeps the most recent [`TapReader::capacity`] samples of one tapped signal. The audio
//! thread never waits for the reader and is never refused: each [`TapWriter::publish`]
//! overwrites the oldest samples. Every sample carries an implicit index (its position in the
//! tap's stream since construction), and the reader keeps a cursor per tap, so a reader that
//! fell behind learns exactly how many samples it missed ([`TapRead::missed`]). A scope wants
//! the most recent window ([`TapReader::latest`]); a spectrum wants contiguous blocks
//! ([`TapReader::read`]) and a count of the gaps.
//!
//! # Protocol (hand-written atomics, model-checked with loom in `rt-tests/tests/loom_taps.rs`)
//!
//! Per tap, two counters written only by the audio thread, both in samples since construction:
//!
//! * `claimed`: stored (Relaxed) *before* a block's samples are written, followed by a Release
//!   fence. It says "samples below `claimed - capacity` may be being overwritten".
//! * `published`: stored (Release) *after* the block's samples. Samples below it are complete.
//!
//! The samples are `AtomicU32` cells holding `f32` bits, accessed Relaxed (no data race, no
//! `unsafe`). The reader loads `published` (Acquire), copies the window it wants, issues an
//! Acquire fence and loads `claimed`. If a copied sample was overwritten by a later block, the
//! fence pair makes that block's `claimed` visible, so the reader drops every copied sample with
//! an index below `claimed - capacity` (they are counted as missed). A torn read is therefore
//! impossible to *return*: each sample returned is the one published at its index.
//!
//! # What it costs
//!
//! The writer: one Relaxed load, one Relaxed store, one fence, `min(block, capacity)` Relaxed
//! stores and one Release store per block; no read-modify-write, no loop that depends on the
//! reader. On x86-64 all of these are plain `mov`s. The reader never writes shared memory.
//!
//! Allocation happens only in [`tap_bank`] (called by [`bridge`](super::bridge)); dropping the
//! last of the two halves frees it.

#[cfg(loom)]
use loom::sync::{
    atomic::{fence, AtomicU32, AtomicU64, Ordering},
    Arc,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{fence, AtomicU32, AtomicU64, Ordering},
    Arc,
};

use crossbeam_utils::CachePadded;

/// Most taps a bridge can carry (see [`RtConfig::with_taps`](super::RtConfig::with_taps)).
pub const MAX_TAPS: usize = 64;
/// Smallest ring, in samples. Requested capacities are raised to this.
pub const MIN_TAP_CAPACITY: usize = 16;
/// Largest ring, in samples (2²⁰ = 4 MiB of `f32` per tap). Requested capacities are lowered
/// to this.
pub const MAX_TAP_CAPACITY: usize = 1 << 20;

/// Errors of the tap operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapError {
    /// The tap index is not below the configured tap count.
    NoSuchTap,
}

impl core::fmt::Display for TapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TapError::NoSuchTap => f.write_str("no such tap"),
        }
    }
}

impl std::error::Error for TapError {}

/// What one read returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TapRead {
    /// Index (in the tap's stream since construction) of the first sample written to `out`.
    pub first: u64,
    /// Samples written to `out[..samples]`, oldest first, contiguous from `first`.
    pub samples: usize,
    /// Samples between the previous read's end and `first` that this reader never got:
    /// overwritten before it came (overrun), or caught being overwritten during the copy, or
    /// (for [`TapReader::latest`]) skipped on purpose.
    pub missed: u64,
}

#[derive(Debug)]
struct Head {
    /// Writer's claim: samples of this tap written or being written.
    claimed: AtomicU64,
    /// Samples of this tap completely written.
    published: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    heads: Box<[CachePadded<Head>]>,
    /// `taps * capacity` cells of `f32` bits, tap after tap.
    ring: Box<[AtomicU32]>,
    capacity: usize,
}

impl Shared {
    fn ring(&self, tap: usize) -> &[AtomicU32] {
        &self.ring[tap * self.capacity..(tap + 1) * self.capacity]
    }
}

/// The audio thread's half: publishes blocks. Wait-free; never allocates, locks or makes a
/// system call. `Send`, not `Sync`, not `Clone`: one writer.
#[derive(Debug)]
pub struct TapWriter {
    shared: Arc<Shared>,
}

/// The consumer's half (network or worker thread): copies samples out. Never blocks, never
/// allocates, never writes memory the audio thread reads. `Send`, not `Sync`.
#[derive(Debug)]
pub struct TapReader {
    shared: Arc<Shared>,
    /// Per tap: index of the next sample this reader has not yet returned or counted missed.
    cursors: Box<[u64]>,
}

/// Creates `taps` taps (clamped to `0..=`[`MAX_TAPS`]) of `capacity` samples each (rounded up
/// to a power of two within [`MIN_TAP_CAPACITY`]`..=`[`MAX_TAP_CAPACITY`]).
///
/// Allocates the rings and counters; this is the only allocation of the tap path.
pub fn tap_bank(taps: usize, capacity: usize) -> (TapWriter, TapReader) {
    let taps = taps.min(MAX_TAPS);
    let capacity = capacity
        .clamp(MIN_TAP_CAPACITY, MAX_TAP_CAPACITY)
        .next_power_of_two();
    let heads = (0..taps)
        .map(|_| {
            CachePadded::new(Head {
                claimed: AtomicU64::new(0),
                published: AtomicU64::new(0),
            })
        })
        .collect();
    let ring = (0..taps * capacity).map(|_| AtomicU32::new(0)).collect();
    let shared = Arc::new(Shared {
        heads,
        ring,
        capacity,
    });
    let reader = TapReader {
        shared: Arc::clone(&shared),
        cursors: vec![0; taps].into_boxed_slice(),
    };
    (TapWriter { shared }, reader)
}

impl TapWriter {
    /// Number of taps.
    pub fn taps(&self) -> usize {
        self.shared.heads.len()
    }

    /// Appends `block` to tap `tap`, overwriting the oldest samples. Wait-free and bounded:
    /// at most `capacity` stores whatever the block length (of a block longer than the ring
    /// only the last `capacity` samples are kept; the rest count as missed for the reader).
    /// An empty block does nothing.
    #[inline]
    pub fn publish(&mut self, tap: usize, block: &[f32]) -> Result<(), TapError> {
        let head = self.shared.heads.get(tap).ok_or(TapError::NoSuchTap)?;
        if block.is_empty() {
            return Ok(());
        }
        let capacity = self.shared.capacity;
        // Only this thread writes the counters: reading our own last store.
        let end = head
            .published
            .load(Ordering::Relaxed)
            .wrapping_add(block.len() as u64);
        let kept = &block[block.len().saturating_sub(capacity)..];
        head.claimed.store(end, Ordering::Relaxed);
        // Orders the claim before the sample stores below: a reader that sees any of them
        // and then fences (Acquire) sees this claim.
        fence(Ordering::Release);
        let ring = self.shared.ring(tap);
        let first = (end.wrapping_sub(kept.len() as u64) as usize) & (capacity - 1);
        let (to_end, wrapped) = kept.split_at(kept.len().min(capacity - first));
        for (cell, x) in ring[first..].iter().zip(to_end) {
            cell.store(x.to_bits(), Ordering::Relaxed);
        }
        for (cell, x) in ring.iter().zip(wrapped) {
            cell.store(x.to_bits(), Ordering::Relaxed);
        }
        head.published.store(end, Ordering::Release);
        Ok(())
    }
}

impl TapReader {
    /// Number of taps.
    pub fn taps(&self) -> usize {
        self.shared.heads.len()
    }

    /// Samples each ring holds (a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Samples published to `tap` since construction (one Acquire load; stale immediately).
    pub fn published(&self, tap: usize) -> Result<u64, TapError> {
        let head = self.shared.heads.get(tap).ok_or(TapError::NoSuchTap)?;
        Ok(head.published.load(Ordering::Acquire))
    }

    /// Copies the samples of `tap` this reader has not seen yet, oldest first, up to
    /// `out.len()`, and advances the cursor past them. For contiguous processing (FFT blocks).
    ///
    /// If the audio thread overwrote unread samples (the reader is more than a ring behind),
    /// the read starts at the oldest sample still intact and [`TapRead::missed`] says how many
    /// were skipped. Under a race the returned samples are exactly the published ones: samples
    /// overwritten during the copy are dropped (and counted missed), never returned torn.
    ///
    /// Accounting: over any sequence of `read` calls, every sample index below the cursor was
    /// returned exactly once or counted in `missed` exactly once.
    pub fn read(&mut self, tap: usize, out: &mut [f32]) -> Result<TapRead, TapError> {
        self.read_inner(tap, out, Window::Oldest, true)
    }

    /// Copies the most recent `min(out.len(), capacity)` samples of `tap` (fewer before that
    /// many were published), oldest first, and moves the cursor to their end. For a scope: it
    /// may return samples an earlier call returned; [`TapRead::missed`] counts the unread
    /// samples it skipped. Same race guarantee as [`read`](Self::read).
    pub fn latest(&mut self, tap: usize, out: &mut [f32]) -> Result<TapRead, TapError> {
        self.read_inner(tap, out, Window::Newest, true)
    }

    /// [`read`](Self::read) without the torn-read check: only for the loom negative control.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn read_unchecked(&mut self, tap: usize, out: &mut [f32]) -> Result<TapRead, TapError> {
        self.read_inner(tap, out, Window::Oldest, false)
    }

    fn read_inner(
        &mut self,
        tap: usize,
        out: &mut [f32],
        window: Window,
        check: bool,
    ) -> Result<TapRead, TapError> {
        let head = self.shared.heads.get(tap).ok_or(TapError::NoSuchTap)?;
        let capacity = self.shared.capacity;
        let cursor = self.cursors[tap];
        let published = head.published.load(Ordering::Acquire);
        let want = out.len().min(capacity) as u64;
        let start = match window {
            Window::Oldest => cursor.max(published.saturating_sub(capacity as u64)),
            Window::Newest => published.saturating_sub(want),
        };
        let n = published.saturating_sub(start).min(want) as usize;
        let ring = self.shared.ring(tap);
        for (i, slot) in out[..n].iter_mut().enumerate() {
            let index = (start as usize).wrapping_add(i) & (capacity - 1);
            *slot = f32::from_bits(ring[index].load(Ordering::Relaxed));
        }
        // Pairs with the writer's Release fence: if any sample copied above came from a later
        // block, that block's claim is visible below.
        fence(Ordering::Acquire);
        let intact_from = head
            .claimed
            .load(Ordering::Relaxed)
            .saturating_sub(capacity as u64);
        let torn = if check {
            intact_from.saturating_sub(start).min(n as u64) as usize
        } else {
            0
        };
        if torn > 0 {
            out.copy_within(torn..n, 0);
        }
        let first = start + torn as u64;
        let samples = n - torn;
        let end = first + samples as u64;
        let missed = first.saturating_sub(cursor);
        self.cursors[tap] = end.max(cursor);
        Ok(TapRead {
            first,
            samples,
            missed,
        })
    }
}

#[derive(Clone, Copy)]
enum Window {
    Oldest,
    Newest,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ramp(from: u64, n: usize) -> Vec<f32> {
        (0..n).map(|i| (from + i as u64) as f32).collect()
    }

    #[test]
    fn capacity_is_a_clamped_power_of_two() {
        assert_eq!(tap_bank(1, 100).1.capacity(), 128);
        assert_eq!(tap_bank(1, 0).1.capacity(), MIN_TAP_CAPACITY);
        assert_eq!(tap_bank(1, usize::MAX).1.capacity(), MAX_TAP_CAPACITY);
        assert_eq!(tap_bank(MAX_TAPS + 5, 16).1.taps(), MAX_TAPS);
    }

    #[test]
    fn reads_in_order_and_counts_overruns() {
        let (mut w, mut r) = tap_bank(2, 16);
        let mut out = [0.0f32; 32];
        assert_eq!(r.read(0, &mut out).unwrap(), TapRead::default());
        w.publish(0, &ramp(0, 10)).unwrap();
        let got = r.read(0, &mut out[..4]).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (0, 4, 0));
        assert_eq!(&out[..4], &ramp(0, 4)[..]);
        let got = r.read(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (4, 6, 0));
        assert_eq!(&out[..6], &ramp(4, 6)[..]);
        // 40 more: the ring holds 16, so 24 are overwritten before the reader comes.
        for k in 0..5 {
            w.publish(0, &ramp(10 + 8 * k, 8)).unwrap();
        }
        let got = r.read(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (34, 16, 24));
        assert_eq!(&out[..16], &ramp(34, 16)[..]);
        // Tap 1 untouched.
        assert_eq!(r.read(1, &mut out).unwrap().samples, 0);
        assert_eq!(r.published(0), Ok(50));
    }

    #[test]
    fn latest_gives_the_newest_window() {
        let (mut w, mut r) = tap_bank(1, 16);
        let mut out = [0.0f32; 8];
        w.publish(0, &ramp(0, 5)).unwrap();
        let got = r.latest(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (0, 5, 0));
        w.publish(0, &ramp(5, 20)).unwrap();
        let got = r.latest(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (17, 8, 12));
        assert_eq!(out, ramp(17, 8)[..]);
        // Nothing new: the same window again, nothing missed.
        let got = r.latest(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (17, 8, 0));
        // A read after latest continues from its end.
        w.publish(0, &ramp(25, 3)).unwrap();
        let got = r.read(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (25, 3, 0));
    }

    #[test]
    fn block_longer_than_the_ring_keeps_its_end() {
        let (mut w, mut r) = tap_bank(1, 16);
        let mut out = [0.0f32; 64];
        w.publish(0, &ramp(0, 7)).unwrap();
        w.publish(0, &ramp(7, 40)).unwrap();
        let got = r.read(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (31, 16, 31));
        assert_eq!(&out[..16], &ramp(31, 16)[..]);
    }

    #[test]
    fn wrong_tap_is_an_error() {
        let (mut w, mut r) = tap_bank(1, 16);
        assert_eq!(w.publish(1, &[0.0]), Err(TapError::NoSuchTap));
        assert_eq!(r.read(1, &mut [0.0]), Err(TapError::NoSuchTap));
        assert_eq!(r.latest(7, &mut [0.0]), Err(TapError::NoSuchTap));
        let (mut w, _r) = tap_bank(0, 16);
        assert_eq!(w.publish(0, &[0.0]), Err(TapError::NoSuchTap));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Publish(usize),
        Read(usize),
        Latest(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0usize..70).prop_map(Op::Publish),
            (0usize..40).prop_map(Op::Read),
            (0usize..40).prop_map(Op::Latest),
        ]
    }

    proptest::proptest! {
        /// Sequential model: against the full history kept in a `Vec`, every read returns the
        /// samples at its indices, `read` is contiguous with the previous end plus `missed`,
        /// and `read` returns everything still in the ring.
        #[test]
        fn matches_a_reference_history(ops in proptest::collection::vec(op(), 1..60)) {
            let (mut w, mut r) = tap_bank(1, 16);
            let mut history: Vec<f32> = Vec::new();
            let mut end = 0u64;
            let mut out = [0.0f32; 40];
            for op in ops {
                match op {
                    Op::Publish(n) => {
                        let block = ramp(history.len() as u64, n);
                        w.publish(0, &block).unwrap();
                        history.extend_from_slice(&block);
                    }
                    Op::Read(len) | Op::Latest(len) => {
                        let latest = matches!(op, Op::Latest(_));
                        let got = if latest {
                            r.latest(0, &mut out[..len]).unwrap()
                        } else {
                            r.read(0, &mut out[..len]).unwrap()
                        };
                        let total = history.len() as u64;
                        let oldest = total.saturating_sub(16);
                        let want_first = if latest {
                            total.saturating_sub(len.min(16) as u64)
                        } else {
                            end.max(oldest)
                        };
                        let want_n = (total - want_first).min(len.min(16) as u64) as usize;
                        proptest::prop_assert_eq!(got.first, want_first);
                        proptest::prop_assert_eq!(got.samples, want_n);
                        proptest::prop_assert_eq!(got.missed, want_first.saturating_sub(end));
                        let lo = want_first as usize;
                        proptest::prop_assert_eq!(&out[..want_n], &history[lo..lo + want_n]);
                        end = end.max(got.first + got.samples as u64);
                    }
                }
            }
        }
    }

    /// The torn-read check itself: a claim past the copied window drops the suspect prefix.
    #[test]
    fn claimed_overwrite_drops_the_suspect_prefix() {
        let (mut w, mut r) = tap_bank(1, 16);
        w.publish(0, &ramp(0, 16)).unwrap();
        // Simulate a writer that has claimed 4 more samples but not published them yet.
        let head = &w.shared.heads[0];
        head.claimed.store(20, Ordering::Relaxed);
        let mut out = [0.0f32; 16];
        let got = r.read(0, &mut out).unwrap();
        assert_eq!((got.first, got.samples, got.missed), (4, 12, 4));
        assert_eq!(&out[..12], &ramp(4, 12)[..]);
    }
}

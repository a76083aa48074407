//! Analysis mailboxes: what the engine's analysis worker computed (scope min/max, spectrum dB),
//! handed to the network thread, and what the network thread wants computed, handed back.
//!
//! The core ships sample blocks (taps, see [`tap`](super::tap)) and float arrays; the analysis
//! itself (decimation, FFT) is the engine's work, on a thread of its own. This module is the
//! meeting point between that worker and the network thread, and neither ever waits for the
//! other:
//!
//! * a **request table** of [`MAX_ANALYSIS_SLOTS`] slots, each one `AtomicU64` descriptor
//!   (stream, tap, size, rate, generation) written by the network thread (the union of its
//!   sessions' subscriptions) and read by the worker ([`AnalysisWriter::requests`]);
//! * per slot, a **latest-value mailbox**: a triple buffer of [`MAX_ANALYSIS_VALUES`] floats
//!   plus a header. The worker fills its back buffer and swaps it in (one `swap`); the network
//!   thread swaps the newest one out (one `swap`) when a frame is due. Nothing queues: a value
//!   the network thread did not take is replaced by the next (counted in
//!   [`AnalysisValue::seq`] gaps), so memory is fixed and a stalled side never blocks the other.
//!
//! # Threads, allocation, blocking
//!
//! [`analysis_bank`] allocates everything (three buffers of [`MAX_ANALYSIS_VALUES`] floats per
//! slot, 384 KiB in all, plus a scratch copy of one value for the reader); nothing else here
//! allocates. Every method is wait-free and bounded (no lock, no system call, no loop that
//! depends on the other side). [`AnalysisWriter`] belongs to one worker thread,
//! [`AnalysisReader`] to the network thread; both are `Send` and neither is `Clone` (what changes
//! them takes `&mut self`, so each is used by one thread at a time).
//! The audio thread never touches this module.
//!
//! # Protocol
//!
//! Each buffer of a triple buffer is owned by exactly one side at a time: the writer's back
//! buffer, the reader's front buffer, and the middle one, owned by nobody. The buffers are
//! atomics accessed `Relaxed` (no `unsafe`); ownership moves only through the slot's `state`
//! swap (`AcqRel`), which orders a buffer's contents before its hand-over. `state` holds the
//! middle buffer's index and a FRESH bit (the writer swapped in a value the reader has not
//! taken yet). A value carries the descriptor it was computed for; the reader drops a value
//! whose descriptor is no longer the slot's (the subscription changed meanwhile).

use super::sync::{Arc, AtomicU32, AtomicU64, Ordering};
pub use crate::message::{AnalysisKey, AnalysisStream};
#[cfg(loom)]
use loom::sync::atomic::AtomicU8;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU8;

/// Slots of the request table: the distinct (stream, tap) subscriptions served at once. A
/// session holds at most 8 analysis subscriptions (session.md), and one session controls.
pub const MAX_ANALYSIS_SLOTS: usize = 8;
/// Largest value, in floats: a 1024-point scope (min then max, 2048) or a 4096-bin spectrum
/// (the wire's bound, [`message::analysis::MAX_ANALYSIS_VALUES`](crate::message::analysis::MAX_ANALYSIS_VALUES)).
pub const MAX_ANALYSIS_VALUES: usize = crate::message::analysis::MAX_ANALYSIS_VALUES;
/// Largest scope, in points (envelope.md: `points` 16..=1024; the end of
/// [`SCOPE_POINTS`](crate::message::analysis::SCOPE_POINTS)).
pub const MAX_SCOPE_POINTS: u16 = *crate::message::analysis::SCOPE_POINTS.end();
/// Largest spectrum, in bins (envelope.md: `bins` a power of two 16..=4096; the end of
/// [`SPECTRUM_BINS`](crate::message::analysis::SPECTRUM_BINS)).
pub const MAX_SPECTRUM_BINS: u16 = *crate::message::analysis::SPECTRUM_BINS.end();

/// What a slot asks the worker to compute (see [`AnalysisWriter::requests`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnalysisRequest {
    /// The slot (`0..MAX_ANALYSIS_SLOTS`); pass the request back to [`AnalysisWriter::submit`].
    pub slot: usize,
    /// Scope or spectrum.
    pub stream: AnalysisStream,
    /// The tap to analyse.
    pub tap: u16,
    /// Points (scope) or bins (spectrum).
    pub size: u16,
    /// Frames per second the subscribers want (the fastest of them).
    pub rate_hz: u8,
    /// Changes whenever the slot's request changes: a worker keeps per-slot state (FFT plan,
    /// schedule) keyed by it.
    pub generation: u32,
}

impl AnalysisRequest {
    /// Number of floats a value for this request holds: `2 * size` (scope), `size` (spectrum).
    pub fn values(&self) -> usize {
        self.stream.values_for(self.size)
    }

    /// The key this request computes (sessions asking for it share the value).
    pub const fn key(&self) -> AnalysisKey {
        AnalysisKey {
            stream: self.stream,
            tap: self.tap,
            size: self.size,
        }
    }
}

/// One computed value, as the worker submits it.
#[derive(Clone, Copy, Debug)]
pub struct AnalysisFrame<'a> {
    /// Engine sample clock (tap stream index) of the window's last sample. It names the
    /// window: a value with the `sample` a session was last sent is not sent to it again
    /// (envelope.md, "Rate and freshness"), so it must advance with every new window.
    pub sample: u64,
    /// Samples of the tap no frame of this slot covered since the previous one.
    pub missed: u64,
    /// Scope: samples per point; spectrum: the sample rate in Hz.
    pub param: u32,
    /// Scope: `min[0..n]` then `max[0..n]`; spectrum: `db[0..n]`.
    pub values: &'a [f32],
}

/// One value as the network thread takes it (see [`AnalysisReader::take`]).
#[derive(Clone, Copy, Debug)]
pub struct AnalysisValue<'a> {
    /// Counts the worker's submissions to this slot (from 1): equal to the previous take's
    /// means nothing new; a gap of more than 1 means values were replaced before being taken.
    pub seq: u64,
    /// As submitted.
    pub sample: u64,
    /// As submitted.
    pub missed: u64,
    /// As submitted.
    pub param: u32,
    /// As submitted (a copy in the reader's scratch buffer).
    pub values: &'a [f32],
}

/// Errors of [`AnalysisWriter::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// The slot's request changed (or ended) since the worker read it: the value was dropped.
    Stale,
    /// `values.len()` is not [`AnalysisRequest::values`].
    WrongLength,
    /// The reader (network side) is gone: nobody will take the value.
    Closed,
}

impl core::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SubmitError::Stale => "the request changed since it was read",
            SubmitError::WrongLength => "value length does not match the request",
            SubmitError::Closed => "the network side is gone",
        })
    }
}

impl std::error::Error for SubmitError {}

// Descriptor word: size 0..16, tap 16..32, rate 32..40, kind bit 40, active bit 41,
// generation 42..64. 0 = inactive.
const ACTIVE: u64 = 1 << 41;
const SPECTRUM: u64 = 1 << 40;
const GEN_SHIFT: u32 = 42;
const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;

fn pack(key: AnalysisKey, rate_hz: u8, generation: u32) -> u64 {
    let kind = match key.stream {
        AnalysisStream::Scope => 0,
        AnalysisStream::Spectrum => SPECTRUM,
    };
    u64::from(key.size)
        | u64::from(key.tap) << 16
        | u64::from(rate_hz) << 32
        | kind
        | ACTIVE
        | (u64::from(generation) & GEN_MASK) << GEN_SHIFT
}

fn unpack(slot: usize, word: u64) -> Option<AnalysisRequest> {
    if word & ACTIVE == 0 {
        return None;
    }
    Some(AnalysisRequest {
        slot,
        stream: if word & SPECTRUM != 0 {
            AnalysisStream::Spectrum
        } else {
            AnalysisStream::Scope
        },
        tap: (word >> 16) as u16,
        size: word as u16,
        rate_hz: (word >> 32) as u8,
        generation: (word >> GEN_SHIFT) as u32,
    })
}

/// `state`: the middle buffer's index in bits 0..2, FRESH in bit 2.
const INDEX: u8 = 0b011;
const FRESH: u8 = 0b100;

/// One of the three buffers of a mailbox.
#[derive(Debug)]
struct Buffer {
    /// The descriptor word the value was computed for (0: never written).
    desc: AtomicU64,
    seq: AtomicU64,
    sample: AtomicU64,
    missed: AtomicU64,
    param: AtomicU32,
    len: AtomicU32,
    values: Box<[AtomicU32]>,
}

impl Buffer {
    fn new(values: usize) -> Self {
        Self {
            desc: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            sample: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            param: AtomicU32::new(0),
            len: AtomicU32::new(0),
            values: (0..values).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    /// The request (network thread writes, worker reads).
    desc: AtomicU64,
    /// Middle buffer index and FRESH.
    state: AtomicU8,
    bufs: [Buffer; 3],
}

#[derive(Debug)]
struct Shared {
    slots: Box<[Slot]>,
}

/// The worker's half: reads the requests, submits values. One worker (`&mut self` to submit).
#[derive(Debug)]
pub struct AnalysisWriter {
    shared: Arc<Shared>,
    /// Per slot: the buffer this side owns.
    back: [u8; MAX_ANALYSIS_SLOTS],
    /// Per slot: submissions so far.
    seq: [u64; MAX_ANALYSIS_SLOTS],
}

/// The network thread's half: sets the requests, takes values (`&mut self`).
#[derive(Debug)]
pub struct AnalysisReader {
    shared: Arc<Shared>,
    /// Per slot: the buffer this side owns.
    front: [u8; MAX_ANALYSIS_SLOTS],
    /// Per slot: the descriptor this side wrote last.
    desc: [u64; MAX_ANALYSIS_SLOTS],
    generation: u32,
    scratch: Box<[f32]>,
}

/// Creates the request table and the mailboxes of [`MAX_ANALYSIS_SLOTS`] slots, each value up
/// to [`MAX_ANALYSIS_VALUES`] floats. The only allocation of this module.
pub fn analysis_bank() -> (AnalysisWriter, AnalysisReader) {
    analysis_bank_sized(MAX_ANALYSIS_VALUES)
}

/// [`analysis_bank`] with smaller buffers (loom models): values longer than `values` are
/// refused with [`SubmitError::WrongLength`].
#[doc(hidden)]
pub fn analysis_bank_sized(values: usize) -> (AnalysisWriter, AnalysisReader) {
    let values = values.min(MAX_ANALYSIS_VALUES);
    let slots = (0..MAX_ANALYSIS_SLOTS)
        .map(|_| Slot {
            desc: AtomicU64::new(0),
            state: AtomicU8::new(1),
            bufs: [
                Buffer::new(values),
                Buffer::new(values),
                Buffer::new(values),
            ],
        })
        .collect();
    let shared = Arc::new(Shared { slots });
    let reader = AnalysisReader {
        shared: Arc::clone(&shared),
        front: [0; MAX_ANALYSIS_SLOTS],
        desc: [0; MAX_ANALYSIS_SLOTS],
        generation: 0,
        scratch: vec![0.0; values].into_boxed_slice(),
    };
    let writer = AnalysisWriter {
        shared,
        back: [2; MAX_ANALYSIS_SLOTS],
        seq: [0; MAX_ANALYSIS_SLOTS],
    };
    (writer, reader)
}

impl AnalysisWriter {
    /// The active requests, slot by slot (each one `Acquire` load; stale as soon as read: a
    /// value computed for a request that changed meanwhile is refused by
    /// [`submit`](Self::submit) as [`SubmitError::Stale`]).
    pub fn requests(&self) -> impl Iterator<Item = AnalysisRequest> + '_ {
        self.shared
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| unpack(i, s.desc.load(Ordering::Acquire)))
    }

    /// Whether the network side (the [`AnalysisReader`]) still exists.
    pub fn is_connected(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// Puts a value for `req` in its slot's mailbox, replacing one not taken yet. Wait-free:
    /// `frame.values.len()` relaxed stores and one swap.
    pub fn submit(
        &mut self,
        req: &AnalysisRequest,
        frame: &AnalysisFrame<'_>,
    ) -> Result<(), SubmitError> {
        let slot = self.shared.slots.get(req.slot).ok_or(SubmitError::Stale)?;
        let word = pack(req.key(), req.rate_hz, req.generation);
        if slot.desc.load(Ordering::Acquire) != word {
            return Err(SubmitError::Stale);
        }
        let back = &slot.bufs[usize::from(self.back[req.slot])];
        if frame.values.len() != req.values() || frame.values.len() > back.values.len() {
            return Err(SubmitError::WrongLength);
        }
        if !self.is_connected() {
            return Err(SubmitError::Closed);
        }
        self.seq[req.slot] += 1;
        back.desc.store(word, Ordering::Relaxed);
        back.seq.store(self.seq[req.slot], Ordering::Relaxed);
        back.sample.store(frame.sample, Ordering::Relaxed);
        back.missed.store(frame.missed, Ordering::Relaxed);
        back.param.store(frame.param, Ordering::Relaxed);
        back.len.store(frame.values.len() as u32, Ordering::Relaxed);
        for (cell, v) in back.values.iter().zip(frame.values) {
            cell.store(v.to_bits(), Ordering::Relaxed);
        }
        // Hands the back buffer over (Release) and takes the middle one (Acquire: the reader
        // may have owned it, and its reads must be done before we overwrite it).
        let prev = slot.state.swap(self.back[req.slot] | FRESH, ordering());
        self.back[req.slot] = prev & INDEX;
        Ok(())
    }
}

/// The hand-over ordering: `AcqRel` (`Relaxed` in the deliberately broken
/// `loophole_weak_ordering` build, the loom model's negative control).
const fn ordering() -> Ordering {
    if cfg!(loophole_weak_ordering) {
        Ordering::Relaxed
    } else {
        Ordering::AcqRel
    }
}

impl AnalysisReader {
    /// The request of `slot`, as this side last set it.
    pub fn request(&self, slot: usize) -> Option<AnalysisRequest> {
        unpack(slot, *self.desc.get(slot)?)
    }

    /// The slot serving `key`, if any.
    pub fn slot_of(&self, key: AnalysisKey) -> Option<usize> {
        (0..MAX_ANALYSIS_SLOTS).find(|&i| {
            self.request(i)
                .is_some_and(|r| (r.stream, r.tap, r.size) == (key.stream, key.tap, key.size))
        })
    }

    /// Sets what `slot` asks for (`None`: nothing). A change of key or rate gives the slot a
    /// new generation, so values computed for the old request are dropped. No change: no
    /// store. Out-of-range slots are ignored.
    pub fn set(&mut self, slot: usize, want: Option<(AnalysisKey, u8)>) {
        let Some(current) = self.desc.get(slot).copied() else {
            return;
        };
        let same = match (unpack(slot, current), want) {
            (None, None) => true,
            (Some(r), Some((k, rate))) => {
                (r.stream, r.tap, r.size, r.rate_hz) == (k.stream, k.tap, k.size, rate)
            }
            _ => false,
        };
        if same {
            return;
        }
        let word = match want {
            Some((key, rate)) => {
                self.generation = self.generation.wrapping_add(1);
                pack(key, rate, self.generation)
            }
            None => 0,
        };
        self.desc[slot] = word;
        self.shared.slots[slot].desc.store(word, Ordering::Release);
    }

    /// The newest value of `slot` for its current request, copied into this side's scratch
    /// buffer; `None` if the worker has submitted none for it yet. Takes a fresh value from
    /// the mailbox if there is one (one swap), else returns the one taken before (same `seq`).
    pub fn take(&mut self, slot: usize) -> Option<AnalysisValue<'_>> {
        let desc = *self.desc.get(slot)?;
        if desc == 0 {
            return None;
        }
        let s = &self.shared.slots[slot];
        if s.state.load(Ordering::Relaxed) & FRESH != 0 {
            // Hands our front buffer back as the (not fresh) middle one, takes the newest.
            let prev = s.state.swap(self.front[slot], ordering());
            self.front[slot] = prev & INDEX;
        }
        let buf = &s.bufs[usize::from(self.front[slot])];
        if buf.desc.load(Ordering::Relaxed) != desc {
            return None;
        }
        let len = (buf.len.load(Ordering::Relaxed) as usize).min(self.scratch.len());
        for (out, cell) in self.scratch[..len].iter_mut().zip(buf.values.iter()) {
            *out = f32::from_bits(cell.load(Ordering::Relaxed));
        }
        Some(AnalysisValue {
            seq: buf.seq.load(Ordering::Relaxed),
            sample: buf.sample.load(Ordering::Relaxed),
            missed: buf.missed.load(Ordering::Relaxed),
            param: buf.param.load(Ordering::Relaxed),
            values: &self.scratch[..len],
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn key(stream: AnalysisStream, tap: u16, size: u16) -> AnalysisKey {
        AnalysisKey { stream, tap, size }
    }

    fn frame(values: &[f32], sample: u64) -> AnalysisFrame<'_> {
        AnalysisFrame {
            sample,
            missed: 0,
            param: 48_000,
            values,
        }
    }

    #[test]
    fn descriptor_round_trips() {
        let k = key(AnalysisStream::Spectrum, 63, 4096);
        let r = unpack(5, pack(k, 60, 0x3f_ffff)).unwrap();
        assert_eq!(
            (r.slot, r.stream, r.tap, r.size, r.rate_hz, r.generation),
            (5, AnalysisStream::Spectrum, 63, 4096, 60, 0x3f_ffff)
        );
        let r = unpack(0, pack(key(AnalysisStream::Scope, 0, 16), 1, 0)).unwrap();
        assert_eq!(
            (r.stream, r.size, r.rate_hz),
            (AnalysisStream::Scope, 16, 1)
        );
        assert_eq!(unpack(0, 0), None);
    }

    #[test]
    fn the_newest_value_wins_and_nothing_queues() {
        let (mut w, mut r) = analysis_bank();
        assert_eq!(w.requests().count(), 0);
        assert!(r.take(0).is_none());
        r.set(3, Some((key(AnalysisStream::Spectrum, 1, 16), 30)));
        let req = w.requests().next().unwrap();
        assert_eq!((req.slot, req.tap, req.size, req.values()), (3, 1, 16, 16));
        assert!(r.take(3).is_none(), "nothing submitted yet");
        for i in 0..5 {
            w.submit(&req, &frame(&[i as f32; 16], 100 + i)).unwrap();
        }
        let v = r.take(3).unwrap();
        assert_eq!((v.seq, v.sample, v.param), (5, 104, 48_000));
        assert_eq!(v.values, &[4.0; 16]);
        // Nothing new: the same value again, same seq.
        assert_eq!(r.take(3).unwrap().seq, 5);
        w.submit(&req, &frame(&[9.0; 16], 200)).unwrap();
        let v = r.take(3).unwrap();
        assert_eq!((v.seq, v.sample, v.values[15]), (6, 200, 9.0));
    }

    #[test]
    fn a_changed_request_drops_old_values_and_refuses_stale_ones() {
        let (mut w, mut r) = analysis_bank();
        r.set(0, Some((key(AnalysisStream::Scope, 0, 16), 30)));
        let old = w.requests().next().unwrap();
        assert_eq!(old.values(), 32);
        w.submit(&old, &frame(&[1.0; 32], 1)).unwrap();
        // Same request again: no change, the value stays.
        r.set(0, Some((key(AnalysisStream::Scope, 0, 16), 30)));
        assert!(r.take(0).is_some());
        // New rate: a new generation; the old value is not offered for it.
        r.set(0, Some((key(AnalysisStream::Scope, 0, 16), 60)));
        assert!(r.take(0).is_none());
        assert_eq!(
            w.submit(&old, &frame(&[1.0; 32], 2)),
            Err(SubmitError::Stale)
        );
        let new = w.requests().next().unwrap();
        assert_ne!(new.generation, old.generation);
        assert_eq!(
            w.submit(&new, &frame(&[1.0; 31], 3)),
            Err(SubmitError::WrongLength)
        );
        w.submit(&new, &frame(&[2.0; 32], 4)).unwrap();
        assert_eq!(r.take(0).unwrap().sample, 4);
        // Ended.
        r.set(0, None);
        assert_eq!(w.requests().count(), 0);
        assert!(r.take(0).is_none());
        assert_eq!(
            w.submit(&new, &frame(&[2.0; 32], 5)),
            Err(SubmitError::Stale)
        );
        assert_eq!(r.slot_of(key(AnalysisStream::Scope, 0, 16)), None);
    }

    #[test]
    fn a_dropped_reader_is_reported() {
        let (mut w, mut r) = analysis_bank();
        r.set(1, Some((key(AnalysisStream::Spectrum, 0, 16), 10)));
        let req = w.requests().next().unwrap();
        assert!(w.is_connected());
        drop(r);
        assert!(!w.is_connected());
        assert_eq!(
            w.submit(&req, &frame(&[0.0; 16], 0)),
            Err(SubmitError::Closed)
        );
    }

    /// Two threads hammering one slot: every value taken is whole (all its floats equal its
    /// `sample`) and `seq` never goes back.
    #[test]
    fn concurrent_values_are_never_torn() {
        let (mut w, mut r) = analysis_bank();
        r.set(0, Some((key(AnalysisStream::Spectrum, 0, 4096), 60)));
        let req = w.requests().next().unwrap();
        let writer = std::thread::spawn(move || {
            let mut buf = vec![0.0f32; 4096];
            for i in 1..=3000u64 {
                buf.fill(i as f32);
                w.submit(&req, &frame(&buf, i)).unwrap();
            }
            w
        });
        let mut last = 0;
        let mut taken = 0;
        while !writer.is_finished() || taken == 0 {
            if let Some(v) = r.take(0) {
                assert!(v.seq >= last);
                last = v.seq;
                assert!(v.values.iter().all(|&x| x == v.sample as f32), "torn");
                assert_eq!(v.seq, v.sample);
                taken += 1;
            }
        }
        let _w = writer.join().unwrap();
        assert_eq!(r.take(0).unwrap().seq, 3000);
    }
}

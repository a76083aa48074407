//! Engine health counters: written by the audio thread, read by the network thread, no locks.
//!
//! Every field is its own atomic with a single writer (the audio thread) that `store`s a value
//! it keeps in a local copy, so the audio side never executes a read-modify-write instruction.
//! The network side loads each field `Relaxed`. Consequence, stated precisely: each field read
//! is a value the audio thread really published, and each counter read is monotonic across
//! successive snapshots, but two fields of one [`HealthSnapshot`] may come from different
//! callbacks (e.g. `callbacks` from callback *k+1* and `sample_clock` from callback *k*). No
//! decision in this crate depends on two fields being from the same callback.
//!
//! All fields sit in one [`CachePadded`] block written once per callback, so the audio thread
//! dirties a couple of cache lines that nothing else writes (no false sharing with the queues).

use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering, ACQUIRE, RELEASE};
use crossbeam_utils::CachePadded;

/// Lock-free audio-thread statistics shared with the network thread.
#[derive(Debug, Default)]
pub(crate) struct Health {
    inner: CachePadded<Fields>,
}

#[derive(Debug, Default)]
struct Fields {
    callbacks: AtomicU64,
    xruns: AtomicU64,
    dsp_load: AtomicU32,
    dsp_load_max: AtomicU32,
    cmd_queue_high: AtomicU64,
    reply_queue_high: AtomicU64,
    telemetry_dropped: AtomicU64,
    reply_stalls: AtomicU64,
    sample_clock: AtomicU64,
    callback_start_ns: AtomicU64,
    period_ns: AtomicU64,
    last_duration_ns: AtomicU64,
    /// Host time at which the last callback ended (for the clock calibration).
    last_end_ns: AtomicU64,
    in_callback: AtomicBool,
    wake_errors: AtomicU64,
}

/// What the audio thread publishes at the end of a callback (its local copies).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallbackStats {
    pub callbacks: u64,
    pub xruns: u64,
    pub dsp_load: f32,
    pub dsp_load_max: f32,
    pub cmd_queue_high: u64,
    pub reply_queue_high: u64,
    pub telemetry_dropped: u64,
    pub reply_stalls: u64,
    pub sample_clock: u64,
    pub last_duration_ns: u64,
    pub last_end_ns: u64,
    pub wake_errors: u64,
}

/// A copy of the engine's health counters (see [`NetEndpoint::health`](super::NetEndpoint::health)).
///
/// Fields are read one by one without a lock: each is a value the audio thread published, but
/// two fields may come from consecutive callbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct HealthSnapshot {
    /// Callbacks completed (`end_callback` calls).
    pub callbacks: u64,
    /// Xruns reported by the host through `AudioEndpoint::report_xrun`.
    pub xruns: u64,
    /// DSP load of the last callback: time in callback / period (1.0 = the whole period).
    pub dsp_load: f32,
    /// Highest DSP load since the bridge was created (for the max over a telemetry interval use
    /// `NetEndpoint::take_dsp_load_max`).
    pub dsp_load_max: f32,
    /// Commands queued towards the audio thread now (seen from the network side).
    pub cmd_queue_len: usize,
    /// Capacity of the command queue.
    pub cmd_queue_capacity: usize,
    /// Highest number of queued commands the audio thread found at the start of a drain.
    pub cmd_queue_high: usize,
    /// Highest reply-queue occupancy the audio thread saw after pushing (from its cached view of
    /// the consumer's position, so it may over-report, never under-report).
    pub reply_queue_high: usize,
    /// Telemetry replies (transport state) dropped because the reply queue had no spare room.
    pub telemetry_dropped: u64,
    /// Drains that stopped early because the reply queue had no free slot for an answer (the
    /// commands stayed queued; nothing was lost).
    pub reply_stalls: u64,
    /// Engine sample clock at the end of the last callback.
    pub sample_clock: u64,
    /// Failed wake-ups (only with the `rt-wake` feature; always 0 otherwise).
    pub wake_errors: u64,
}

/// Callback timing as published (see `NetEndpoint::next_callback_end_ns`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub start_ns: u64,
    pub period_ns: u64,
    pub last_duration_ns: u64,
}

impl Health {
    /// Audio side, start of callback: two stores.
    #[inline]
    pub fn publish_start(&self, start_ns: u64, period_ns: u64) {
        let f = &self.inner;
        f.callback_start_ns.store(start_ns, Ordering::Relaxed);
        f.period_ns.store(period_ns, Ordering::Relaxed);
        f.in_callback.store(true, Ordering::Relaxed);
    }

    /// Audio side, end of callback: one store per field, no RMW.
    #[inline]
    pub fn publish_end(&self, s: &CallbackStats) {
        let f = &self.inner;
        f.xruns.store(s.xruns, Ordering::Relaxed);
        f.dsp_load.store(s.dsp_load.to_bits(), Ordering::Relaxed);
        f.dsp_load_max
            .store(s.dsp_load_max.to_bits(), Ordering::Relaxed);
        f.cmd_queue_high.store(s.cmd_queue_high, Ordering::Relaxed);
        f.reply_queue_high
            .store(s.reply_queue_high, Ordering::Relaxed);
        f.telemetry_dropped
            .store(s.telemetry_dropped, Ordering::Relaxed);
        f.reply_stalls.store(s.reply_stalls, Ordering::Relaxed);
        f.sample_clock.store(s.sample_clock, Ordering::Relaxed);
        f.last_duration_ns
            .store(s.last_duration_ns, Ordering::Relaxed);
        f.last_end_ns.store(s.last_end_ns, Ordering::Relaxed);
        f.wake_errors.store(s.wake_errors, Ordering::Relaxed);
        // Release, paired with the Acquire in `in_callback`: every reply this callback pushed
        // (the queue's write index, stored before this) is visible to a network thread that
        // sees `false`. Its reply spin stops on `!in_callback()` and then takes the replies
        // once more, so it cannot stop with the callback's last answer unseen. With `Relaxed`
        // a weakly ordered CPU (Apple Silicon) may show `false` before that answer; loom
        // finds it (rt-tests/tests/loom_health.rs, and the weakened build of scripts/test.d/rt.sh).
        f.in_callback.store(false, RELEASE);
        f.callbacks.store(s.callbacks, Ordering::Relaxed);
    }

    /// Network side: field-by-field copy.
    pub fn snapshot(&self, cmd_queue_len: usize, cmd_queue_capacity: usize) -> HealthSnapshot {
        let f = &self.inner;
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HealthSnapshot {
            callbacks: u(&f.callbacks),
            xruns: u(&f.xruns),
            dsp_load: f32::from_bits(f.dsp_load.load(Ordering::Relaxed)),
            dsp_load_max: f32::from_bits(f.dsp_load_max.load(Ordering::Relaxed)),
            cmd_queue_len,
            cmd_queue_capacity,
            cmd_queue_high: usize::try_from(u(&f.cmd_queue_high)).unwrap_or(usize::MAX),
            reply_queue_high: usize::try_from(u(&f.reply_queue_high)).unwrap_or(usize::MAX),
            telemetry_dropped: u(&f.telemetry_dropped),
            reply_stalls: u(&f.reply_stalls),
            sample_clock: u(&f.sample_clock),
            wake_errors: u(&f.wake_errors),
        }
    }

    /// Network side: the timing fields (independently atomic; may mix two callbacks).
    pub fn timing(&self) -> Timing {
        let f = &self.inner;
        Timing {
            start_ns: f.callback_start_ns.load(Ordering::Relaxed),
            period_ns: f.period_ns.load(Ordering::Relaxed),
            last_duration_ns: f.last_duration_ns.load(Ordering::Relaxed),
        }
    }

    /// Network side: host time at which the last callback ended.
    pub fn last_end_ns(&self) -> u64 {
        self.inner.last_end_ns.load(Ordering::Relaxed)
    }

    /// Network side: whether the audio thread is between `begin_callback` and `end_callback`.
    ///
    /// Acquire, paired with the Release of `publish_end`: after reading `false`, every reply
    /// of the callback that stored it can be popped.
    pub fn in_callback(&self) -> bool {
        self.inner.in_callback.load(ACQUIRE)
    }
}

/// The in-callback flag as the loom model check drives it (`rt-tests/tests/loom_health.rs`).
/// Only under `cfg(loom)`; not part of the API.
#[cfg(loom)]
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct LoomHealth(Health);

#[cfg(loom)]
impl LoomHealth {
    /// What `AudioEndpoint::begin_callback` publishes.
    pub fn begin(&self) {
        self.0.publish_start(1, 1);
    }
    /// What `AudioEndpoint::end_callback` publishes.
    pub fn end(&self) {
        self.0.publish_end(&CallbackStats::default());
    }
    /// What `NetEndpoint::audio_in_callback` reads.
    pub fn in_callback(&self) -> bool {
        self.0.in_callback()
    }
}

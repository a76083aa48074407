//! This crate's monotonic clock, the network thread's.
//!
//! [`NetEndpoint::next_callback_end_ns`](crate::rt::NetEndpoint::next_callback_end_ns) predicts a
//! time in this clock. The host may pass its own clock to `AudioEndpoint::begin_callback`/
//! `end_callback` (any monotonic nanosecond clock: the network side learns the offset), or
//! [`now_ns`] (then the offset is exactly 0).
//!
//! The clock is `std::time::Instant` (on Linux `CLOCK_MONOTONIC` through the vDSO: no system
//! call, no lock after the first call) measured from a process-wide epoch fixed at the first
//! call. Call [`now_ns`] once before the audio thread starts so the epoch's one-time
//! initialisation never happens inside a callback.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process epoch (fixed at the first call of any function here).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch. Monotonic; wraps after 584 years.
pub fn now_ns() -> u64 {
    to_ns(Instant::now())
}

/// Microseconds since the process epoch (the `t_engine_us` of `pong`).
pub fn now_us() -> u64 {
    now_ns() / 1_000
}

/// An `Instant` as nanoseconds since the process epoch (0 for instants before it).
pub fn to_ns(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

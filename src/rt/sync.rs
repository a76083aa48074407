//! Atomics used by the hand-written hand-over protocols (meters, the in-callback flag): `loom`'s
//! under `cfg(loom)`, `std`'s otherwise, so the same code is model-checked.
//!
//! [`ACQUIRE`] and [`RELEASE`] are the orderings those protocols rely on. Under
//! `--cfg loophole_weak_ordering` both become `Relaxed`: a deliberately broken build, used only
//! as the negative control of the loom model check (`scripts/test.d/rt.sh` requires loom to
//! catch it). Never ship it.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    Arc,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    Arc,
};

/// `Acquire` (`Relaxed` in the weakened negative-control build).
pub(crate) const ACQUIRE: Ordering = if cfg!(loophole_weak_ordering) {
    Ordering::Relaxed
} else {
    Ordering::Acquire
};

/// `Release` (`Relaxed` in the weakened negative-control build).
pub(crate) const RELEASE: Ordering = if cfg!(loophole_weak_ordering) {
    Ordering::Relaxed
} else {
    Ordering::Release
};

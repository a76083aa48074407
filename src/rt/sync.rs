//! Atomics used by the hand-written meter protocol: `loom`'s under `cfg(loom)`, `std`'s
//! otherwise, so the same code is model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc,
};

//! Allocation guard for embedders (`rt-guard` feature): catches any heap allocation made on a
//! thread while it is inside an audio callback.
//!
//! [`AudioEndpoint::begin_callback`](super::AudioEndpoint::begin_callback) sets a thread-local
//! "in audio callback" flag and [`end_callback`](super::AudioEndpoint::end_callback) clears it.
//! [`GuardedAllocator`] wraps the embedder's global allocator and checks the flag on every
//! `alloc`, `alloc_zeroed`, `realloc` and `dealloc`: a hit is counted ([`violations`]) and,
//! depending on the [`GuardAction`], the process aborts with a message written straight to
//! file descriptor 2.
//!
//! ```
//! use loophole_ipc::rt::guard::{self, GuardAction, GuardedAllocator};
//! use std::alloc::System;
//!
//! #[global_allocator]
//! static A: GuardedAllocator<System> = GuardedAllocator::new(System, GuardAction::AbortInDebug);
//!
//! fn main() {
//!     let (mut audio, _net) = loophole_ipc::rt::bridge(&Default::default());
//!     audio.begin_callback(0, 64);
//!     assert!(guard::in_audio_callback()); // a Box::new here would abort (debug build)
//!     audio.end_callback(1_000);
//!     let fine = vec![1u8; 16]; // outside the callback: allowed
//!     assert_eq!(guard::violations(), 0);
//!     drop(fine);
//! }
//! ```
//!
//! Cost when installed: one thread-local `bool` read per allocation, and one per
//! `begin_callback`/`end_callback` (a write). The flag is a `const`-initialised
//! `Cell<bool>` without destructor, so reading it never allocates.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);

/// What [`GuardedAllocator`] does when the audio thread allocates or frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardAction {
    /// Count it (see [`violations`]) and go on.
    Count,
    /// Count it, write a message to stderr (fd 2, one `write(2)`) and abort.
    Abort,
    /// [`Abort`](Self::Abort) when this crate is built with debug assertions, else
    /// [`Count`](Self::Count).
    AbortInDebug,
}

/// A global allocator wrapper that detects allocation inside the audio callback.
#[derive(Debug)]
pub struct GuardedAllocator<A> {
    inner: A,
    action: GuardAction,
}

impl<A> GuardedAllocator<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A, action: GuardAction) -> Self {
        GuardedAllocator { inner, action }
    }

    #[inline]
    fn check(&self, size: usize) {
        if !in_audio_callback() {
            return;
        }
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        LAST_SIZE.store(size, Ordering::Relaxed);
        let abort = match self.action {
            GuardAction::Count => false,
            GuardAction::Abort => true,
            GuardAction::AbortInDebug => cfg!(debug_assertions),
        };
        if abort {
            const MSG: &[u8] =
                b"loophole-ipc rt-guard: heap allocation or free inside the audio callback\n";
            // SAFETY: writes a static buffer of the given length to fd 2; no memory is touched.
            unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len() as _) }; // size_t; Windows: c_uint
            std::process::abort();
        }
    }
}

// SAFETY: every method forwards to `inner` with the same arguments after a check that neither
// allocates nor touches the memory; the wrapper upholds whatever `inner` upholds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for GuardedAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.check(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Whether the calling thread is between `begin_callback` and `end_callback`.
#[inline]
pub fn in_audio_callback() -> bool {
    IN_CALLBACK.try_with(Cell::get).unwrap_or(false)
}

/// Allocations (and frees) caught inside an audio callback since the process started.
pub fn violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

/// Size in bytes of the most recent caught allocation.
pub fn last_violation_size() -> usize {
    LAST_SIZE.load(Ordering::Relaxed)
}

#[inline]
pub(crate) fn enter_callback() {
    let _ = IN_CALLBACK.try_with(|f| f.set(true));
}

#[inline]
pub(crate) fn exit_callback() {
    let _ = IN_CALLBACK.try_with(|f| f.set(false));
}

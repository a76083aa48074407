//! Shared harness for the real-time guarantee tests in `tests/`.
//!
//! * [`CountingAllocator`] — a global allocator wrapper counting allocations per thread (each
//!   test binary installs it with `#[global_allocator]`).
//! * [`seccomp`] — a per-thread seccomp filter that traps every system call but the simulated
//!   driver's clock/sleep calls, and counts the traps.
//! * [`simulate`] — a simulated audio thread running the real `AudioEndpoint` callback path while
//!   a network thread floods, drains slowly, pauses and finally drops its `NetEndpoint`;
//!   with [`tap_sim`], taps are published every callback and read by a third thread.
#![allow(unsafe_code)]

pub mod seccomp;
pub mod sim;
pub mod tap_sim;

pub use sim::{simulate, SimOptions, SimReport};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts every `alloc`, `alloc_zeroed`, `realloc` and `dealloc` made by the calling thread.
///
/// The counter is a `const`-initialised thread-local `Cell<u64>` without destructor, so
/// counting never allocates. The count is read through [`thread_allocs`], an opaque function
/// call the optimiser cannot remove, in release as in debug.
#[derive(Debug)]
pub struct CountingAllocator;

#[inline]
fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to `System` unchanged; counting touches only a thread-local integer.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: caller's contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump();
        // SAFETY: caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap operations (alloc, zeroed alloc, realloc, free) made so far by the calling thread.
#[inline(never)]
pub fn thread_allocs() -> u64 {
    std::hint::black_box(ALLOCS.try_with(Cell::get).unwrap_or(0))
}

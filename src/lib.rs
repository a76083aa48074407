//! # loophole-ipc
//!
//! The IPC core between Loophole's audio engine (Signal) and its UI (Aura): length-prefixed
//! frames of JSON over TCP loopback, with an audio-thread endpoint that never allocates, locks
//! or makes a system call. The wire protocol is specified in `docs/specs/ipc/` for clients in
//! any language.
//!
//! ## Threads and handles
//!
//! - [`rt::bridge`] is the one constructor of the real-time bridge and allocates everything up
//!   front. It returns an [`rt::AudioEndpoint`] for the host's audio callback and an
//!   [`rt::NetEndpoint`] for the network thread.
//! - `net::Server::builder()…spawn(net_endpoint)` binds the port, starts the network thread and
//!   returns a `net::ServerHandle` and a `control::ControlEndpoint` for the engine's
//!   non-real-time control thread (graph edits, shutdown).
//!
//! ## Guarantees (each proved by a test that can fail; see the README)
//!
//! - Every [`rt::AudioEndpoint`] method is wait-free and bounded: no allocation, no lock, no
//!   system call (unless the `rt-wake` feature's waker is configured: then one non-blocking
//!   `write(2)` per callback that answered a command).
//! - Decoding never panics and never allocates, whatever bytes arrive; a declared length is
//!   checked against the limit before anything is buffered.
//! - Every command accepted from the wire gets exactly one answer (`ack`, `welcome`, `pong` or
//!   `error`); when a queue is full the network thread stops reading rather than dropping.
//! - After a connection is set up, the network thread allocates nothing per message.
//!
//! ## Features
//!
//! - `std` (default): the network thread, the `rtrb` bridge, the blocking client. Without it the
//!   crate is `#![no_std]` with no `alloc`: [`frame`], [`message`], [`session`], [`error`] and the
//!   plain types of [`rt`] work over caller buffers.
//! - `rt-guard`: `rt::guard::GuardedAllocator`, a global allocator wrapper that counts or aborts
//!   on any allocation inside an audio callback, for engine authors to catch their own.
//! - `rt-wake`: lets the audio thread wake the network thread directly (see [`rt`]).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod error;
pub mod frame;
pub mod message;
pub mod rt;
pub mod session;

pub use error::{DecodeError, EncodeError, ErrorCode};

#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod clock;
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod control;
#[cfg(feature = "std")]
pub mod net;
/// Test hook (`tests/net_sched.rs`): whether this kernel honours a requested scheduler slice.
#[cfg(feature = "std")]
#[doc(hidden)]
pub use net::sys::short_slice_takes_effect as __short_slice_takes_effect;
/// Benchmark hook (`benches/wake.rs`): the wake-up lateness of the platform timer.
#[cfg(feature = "std")]
#[doc(hidden)]
pub use net::sys::timer_wake_lateness as __timer_wake_lateness;

/// The code blocks of `README.md`, compiled and run as doctests so the README cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

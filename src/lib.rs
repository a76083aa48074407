//! # loophole-ipc
//!
//! The IPC core between Loophole's audio engine (Signal) and its UI (Aura): length-prefixed
//! frames of JSON over TCP loopback, with an audio-thread endpoint that never allocates, locks
//! or makes a system call.
//!
//! Without the default `std` feature the crate is `#![no_std]` and uses no `alloc`: the framing,
//! the envelope, the typed messages and the session state machine work over caller buffers.
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

/// The code blocks of `README.md`, compiled and run as doctests so the README cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

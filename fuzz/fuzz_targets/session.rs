//! Drives the sans-I/O `Session` with arbitrary byte chunks, EOFs, time steps, queue-full
//! phases, answers and shutdowns, and checks its invariants (see `session_model.rs`): never a
//! panic, never two answers to one command, nothing after `goodbye`, every complete command
//! answered by the time the session is closed.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod session_model;

fuzz_target!(|data: &[u8]| session_model::run(data));

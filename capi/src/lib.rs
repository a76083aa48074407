//! # loophole-ipc-capi
//!
//! The C ABI of loophole-ipc, for an engine written in C or C++ (JUCE). It is a thin layer over
//! the Rust API (`rt::bridge`, `net::Server`, `control::ControlEndpoint`): no second
//! implementation of anything. The C header `include/loophole_ipc.h` is generated from this file
//! by cbindgen and committed; `include/loophole_ipc.hpp` is the header-only C++17 wrapper.
//!
//! ## Rules of the ABI
//!
//! - One opaque handle per role: [`LoopholeServer`] (network thread), [`LoopholeAudio`] (the
//!   host's audio thread, one thread at a time) and [`LoopholeControl`] (the engine's control
//!   thread), all made by [`loophole_create`]. They may be freed in any order.
//! - Status codes: [`LOOPHOLE_OK`] (0) or a negative `LOOPHOLE_ERR_*`; [`loophole_status_str`]
//!   names each with a static string. Error detail (only [`loophole_create`] has any) is copied
//!   into a caller buffer. Nothing is thread-local.
//! - Every integer that stands for an enum is validated here; an out-of-range value is an error
//!   status (or, for a drain outcome, a `unsupported` rejection counted in the stats), never
//!   undefined behaviour. Booleans from C are `uint8_t` (non-zero = true).
//! - No unwinding crosses the boundary: every export runs inside `catch_unwind`; a panic returns
//!   [`LOOPHOLE_ERR_PANIC`] (or the call's neutral value) and poisons the handle, after which
//!   every call on it returns [`LOOPHOLE_ERR_POISONED`] or does nothing. A C++ exception must
//!   not leave a drain callback (the C++ wrapper's trampoline is `noexcept`).
//! - The audio functions never fail, never allocate, never lock and make no system call.
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(clippy::missing_safety_doc)] // the C header documents each function's contract

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use loophole_ipc::clock;
use loophole_ipc::config::{token_from_env, PortPolicy};
use loophole_ipc::control::{ControlEndpoint, ControlError, ControlOp, ControlTicket};
use loophole_ipc::net::{AnalysisWorker, BindError, Server, ServerHandle};
use loophole_ipc::rt::analysis::{
    AnalysisFrame, AnalysisRequest, AnalysisStream, SubmitError, MAX_ANALYSIS_SLOTS,
    MAX_ANALYSIS_VALUES,
};
use loophole_ipc::rt::{
    bridge, AudioEndpoint, Outcome, RejectReason, RtCommand, RtConfig, RtOp, TapReader,
    TransportState, MAX_METER_CHANNELS, MAX_TAPS,
};

/// The ABI version of this header. [`loophole_create`] refuses a config whose `abi_version`
/// differs from the library's ([`LOOPHOLE_ERR_ABI_MISMATCH`]).
pub const LOOPHOLE_IPC_ABI_VERSION: u32 = 1;

/// Success.
pub const LOOPHOLE_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const LOOPHOLE_ERR_NULL: i32 = -1;
/// The config's `abi_version` or `struct_size` does not match this library.
pub const LOOPHOLE_ERR_ABI_MISMATCH: i32 = -2;
/// An argument is out of range (an unknown enum value, a bad string, a bad number).
pub const LOOPHOLE_ERR_INVALID_ARGUMENT: i32 = -3;
/// The server could not start (port in use, range exhausted, address refused, ...).
pub const LOOPHOLE_ERR_CANNOT_START: i32 = -4;
/// The caller's buffer is too small. Each call says what it then did: the announcement copies
/// nothing and reports the length it needs; analysis requests copies the first `cap`.
pub const LOOPHOLE_ERR_BUFFER_TOO_SMALL: i32 = -5;
/// No control request arrived within the timeout.
pub const LOOPHOLE_ERR_TIMEOUT: i32 = -6;
/// The network thread has stopped (no more requests; replies cannot be delivered).
pub const LOOPHOLE_ERR_SERVER_GONE: i32 = -7;
/// The ticket names no request awaiting a reply (never issued, or already answered).
pub const LOOPHOLE_ERR_UNKNOWN_TICKET: i32 = -8;
/// The library panicked inside this call; the handle is now poisoned.
pub const LOOPHOLE_ERR_PANIC: i32 = -9;
/// The handle was poisoned by an earlier panic; free it.
pub const LOOPHOLE_ERR_POISONED: i32 = -10;
/// An analysis request changed or ended since it was read: the value was dropped (normal; read
/// the requests again).
pub const LOOPHOLE_ERR_STALE: i32 = -11;
/// The number of values is not what the request needs (`LoopholeAnalysisRequest::values`).
pub const LOOPHOLE_ERR_WRONG_LENGTH: i32 = -12;
/// The operation needs something the config did not ask for (e.g. analysis with
/// `analysis_taps` 0), or it was already taken.
pub const LOOPHOLE_ERR_NOT_CONFIGURED: i32 = -13;

/// `LoopholeAnalysisRequest::stream`: `scope`, the latest window as min/max per point
/// (`values` = 2 × `size`: all minima, then all maxima).
pub const LOOPHOLE_ANALYSIS_SCOPE: u32 = 1;
/// `LoopholeAnalysisRequest::stream`: `spectrum`, dBFS per linear bin (`values` = `size`).
pub const LOOPHOLE_ANALYSIS_SPECTRUM: u32 = 2;

/// `loophole_analysis_read_tap` mode: the most recent `n` samples (may repeat earlier ones;
/// for a scope).
pub const LOOPHOLE_TAP_LATEST: u32 = 0;
/// `loophole_analysis_read_tap` mode: the samples not read yet, oldest first (contiguous
/// processing, e.g. FFT blocks).
pub const LOOPHOLE_TAP_NEXT: u32 = 1;

/// Most analysis taps (`LoopholeConfig::analysis_taps`).
pub const LOOPHOLE_MAX_TAPS: u32 = 64;
/// Most analysis requests active at once (size of the array for `loophole_analysis_requests`).
pub const LOOPHOLE_MAX_ANALYSIS_REQUESTS: u32 = 8;
/// Most values one analysis submission carries.
pub const LOOPHOLE_MAX_ANALYSIS_VALUES: u32 = 4096;

/// `LoopholeCommand::op`: start the transport.
pub const LOOPHOLE_OP_PLAY: u32 = 1;
/// `LoopholeCommand::op`: stop the transport.
pub const LOOPHOLE_OP_STOP: u32 = 2;
/// `LoopholeCommand::op`: move the play head to `position`.
pub const LOOPHOLE_OP_SEEK: u32 = 3;
/// `LoopholeCommand::op`: set the tempo to `bpm`.
pub const LOOPHOLE_OP_TEMPO: u32 = 4;
/// `LoopholeCommand::op`: set the loop `loop_start..loop_end`, `loop_enabled`.
pub const LOOPHOLE_OP_LOOP: u32 = 5;
/// `LoopholeCommand::op`: set parameter `param` of node `node` to `value` over `ramp_ms`.
pub const LOOPHOLE_OP_PARAM_SET: u32 = 6;

/// `LoopholeOutcome::kind`: applied at the block's first sample.
pub const LOOPHOLE_OUTCOME_APPLIED: u32 = 0;
/// `LoopholeOutcome::kind`: applied `value` samples into the block.
pub const LOOPHOLE_OUTCOME_APPLIED_AT: u32 = 1;
/// `LoopholeOutcome::kind`: refused; `value` is a `LOOPHOLE_REJECT_*` reason.
pub const LOOPHOLE_OUTCOME_REJECTED: u32 = 2;

/// Reject reason `unknown_node`.
pub const LOOPHOLE_REJECT_UNKNOWN_NODE: u32 = 1;
/// Reject reason `unknown_param`.
pub const LOOPHOLE_REJECT_UNKNOWN_PARAM: u32 = 2;
/// Reject reason `out_of_range`.
pub const LOOPHOLE_REJECT_OUT_OF_RANGE: u32 = 3;
/// Reject reason `unsupported`.
pub const LOOPHOLE_REJECT_UNSUPPORTED: u32 = 4;

/// `LoopholeControlRequest::op`: `graph.add_node` (`node`, `kind`).
pub const LOOPHOLE_CONTROL_ADD_NODE: u32 = 1;
/// `LoopholeControlRequest::op`: `graph.remove_node` (`node`).
pub const LOOPHOLE_CONTROL_REMOVE_NODE: u32 = 2;
/// `LoopholeControlRequest::op`: `graph.connect` (`from`, `from_port`, `to`, `to_port`).
pub const LOOPHOLE_CONTROL_CONNECT: u32 = 3;
/// `LoopholeControlRequest::op`: `graph.disconnect` (`from`, `from_port`, `to`, `to_port`).
pub const LOOPHOLE_CONTROL_DISCONNECT: u32 = 4;
/// `LoopholeControlRequest::op`: `engine.shutdown`: reply, then shut the server down and exit.
pub const LOOPHOLE_CONTROL_SHUTDOWN: u32 = 5;
/// `LoopholeControlRequest::op`: the supervisor is gone and no client came back; shut down.
/// Takes no reply (ticket 0; a reply with it is ignored).
pub const LOOPHOLE_CONTROL_ORPHANED: u32 = 6;

/// Control reply: done.
pub const LOOPHOLE_CONTROL_RESULT_OK: u32 = 0;
/// Control reply: error `unknown_node`.
pub const LOOPHOLE_CONTROL_RESULT_UNKNOWN_NODE: u32 = 1;
/// Control reply: error `node_exists`.
pub const LOOPHOLE_CONTROL_RESULT_NODE_EXISTS: u32 = 2;
/// Control reply: error `unknown_kind`.
pub const LOOPHOLE_CONTROL_RESULT_UNKNOWN_KIND: u32 = 3;
/// Control reply: error `unsupported`.
pub const LOOPHOLE_CONTROL_RESULT_UNSUPPORTED: u32 = 4;
/// Control reply: error `internal`.
pub const LOOPHOLE_CONTROL_RESULT_FAILED: u32 = 5;
/// Control reply: error `out_of_range`, e.g. a port the node's kind does not have (errors.md
/// §4). Added after the first ABI 1 header; a library without it answers
/// `LOOPHOLE_ERR_INVALID_ARGUMENT` and replies nothing.
pub const LOOPHOLE_CONTROL_RESULT_OUT_OF_RANGE: u32 = 6;

/// Longest node kind in a control request, in bytes (without the terminating NUL).
pub const LOOPHOLE_MAX_NODE_KIND: usize = 32;
/// Most metered channels.
pub const LOOPHOLE_MAX_METER_CHANNELS: u32 = 512;
/// Most slots of `LoopholeConfig::command_capacity`, `reply_capacity` and `control_capacity`
/// (a larger value is `LOOPHOLE_ERR_INVALID_ARGUMENT`, never allocated).
pub const LOOPHOLE_MAX_QUEUE_CAPACITY: u32 = 65_536;

/// Bytes of `LoopholeControlRequest::kind`: the longest kind plus its terminating NUL.
pub const LOOPHOLE_NODE_KIND_CAPACITY: usize = 33;

// The header's literals follow the library's limits.
const _: () = assert!(LOOPHOLE_MAX_METER_CHANNELS as usize == MAX_METER_CHANNELS);
const _: () = assert!(LOOPHOLE_MAX_NODE_KIND == loophole_ipc::message::MAX_NODE_KIND);
const _: () = assert!(LOOPHOLE_NODE_KIND_CAPACITY == LOOPHOLE_MAX_NODE_KIND + 1);
const _: () = assert!(LOOPHOLE_MAX_TAPS as usize == MAX_TAPS);
const _: () = assert!(LOOPHOLE_MAX_ANALYSIS_REQUESTS as usize == MAX_ANALYSIS_SLOTS);
const _: () = assert!(LOOPHOLE_MAX_ANALYSIS_VALUES as usize == MAX_ANALYSIS_VALUES);

/// Everything [`loophole_create`] needs. Fill it with
/// `loophole_config_init_sized(&cfg, sizeof cfg)` first, then change fields. Strings are
/// NUL-terminated UTF-8, read during `loophole_create` only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LoopholeConfig {
    /// `sizeof(LoopholeConfig)` of the caller's header, set by `loophole_config_init_sized`.
    pub struct_size: u32,
    /// [`LOOPHOLE_IPC_ABI_VERSION`] of the header the caller was compiled with.
    pub abi_version: u32,
    /// Address to bind, e.g. `"127.0.0.1"` or `"::1"`; NULL = `127.0.0.1`. Non-loopback
    /// addresses are refused by the server.
    pub host: *const c_char,
    /// Session token clients must present; NULL or empty = none (see `token_from_env`).
    pub token: *const c_char,
    /// Engine name sent in `welcome`; NULL = `"loophole-capi"`.
    pub engine_name: *const c_char,
    /// Also write the announcement JSON to this file (mode 0600); NULL = none.
    pub connection_file: *const c_char,
    /// Port: 0 = chosen by the OS; with `port_range_last` 0, exactly this port.
    pub port: u16,
    /// Non-zero: the first free port of `port..=port_range_last`.
    pub port_range_last: u16,
    /// Non-zero and `token` NULL: read the token from `LOOPHOLE_SESSION_TOKEN`, once, during
    /// `loophole_create` (`getenv`: no other thread may call `setenv`/`putenv` meanwhile).
    /// Unset or empty: no token. A value that is not UTF-8 is `LOOPHOLE_ERR_INVALID_ARGUMENT`
    /// (never "no token": that would accept every local client).
    pub token_from_env: u8,
    /// Nominal sample rate, Hz (> 0). Default 48000.
    pub sample_rate: u32,
    /// Frames per callback announced in `welcome` (> 0). Default 128.
    pub block_size: u32,
    /// Metered channels, `1..=LOOPHOLE_MAX_METER_CHANNELS`. Default 2.
    pub meter_channels: u32,
    /// Slots in the command queue, `1..=LOOPHOLE_MAX_QUEUE_CAPACITY`. Default 256.
    pub command_capacity: u32,
    /// Slots in the reply queue, `1..=LOOPHOLE_MAX_QUEUE_CAPACITY` (raised to
    /// `drain_budget + 1`). Default 512.
    pub reply_capacity: u32,
    /// Most commands handled per callback, `1..=command_capacity`. Default 32.
    pub drain_budget: u32,
    /// Control requests queued towards the control thread,
    /// `1..=LOOPHOLE_MAX_QUEUE_CAPACITY`. Default 64.
    pub control_capacity: u32,
    /// Exit watch: the supervising process id (0 = none).
    pub supervisor_pid: u32,
    /// Analysis taps (`scope`/`spectrum` sources), `0..=LOOPHOLE_MAX_TAPS`. Default 0 (no
    /// analysis). Non-zero: `welcome` announces this many taps, the audio thread publishes
    /// blocks with `loophole_audio_publish_tap`, and the engine's analysis thread takes its
    /// handle with `loophole_server_take_analysis`. Added in ABI 1 after its first release: a
    /// caller built with the earlier header (`struct_size` without this field) gets 0.
    pub analysis_taps: u32,
    /// Samples each tap's ring holds (rounded up to a power of two in 16..=2^20). Default 4096.
    pub tap_capacity: u32,
}

/// `struct_size` of a [`LoopholeConfig`] from the header before `analysis_taps` was added
/// (its fields up to `supervisor_pid`, padded to the struct's alignment). Accepted by
/// `loophole_create`: only those fields are read, the later ones take their defaults.
const CONFIG_V1_FIELDS: usize = std::mem::offset_of!(LoopholeConfig, analysis_taps);
const CONFIG_V1_SIZE: usize = CONFIG_V1_FIELDS.next_multiple_of(align_of::<LoopholeConfig>());

/// One analysis request (the union of the clients' `scope`/`spectrum` subscriptions, one per
/// stream, tap and size), filled by `loophole_analysis_requests`; passed back unchanged to
/// `loophole_analysis_submit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopholeAnalysisRequest {
    /// `sizeof(LoopholeAnalysisRequest)`, set by the library.
    pub struct_size: u32,
    /// The request's slot, `0..LOOPHOLE_MAX_ANALYSIS_REQUESTS`.
    pub slot: u32,
    /// `LOOPHOLE_ANALYSIS_SCOPE` or `LOOPHOLE_ANALYSIS_SPECTRUM`.
    pub stream: u32,
    /// The tap to analyse, `0..analysis_taps`.
    pub tap: u32,
    /// Points (scope, 16..=1024) or bins (spectrum, a power of two 16..=4096).
    pub size: u32,
    /// Frames per second the fastest subscriber wants (an upper bound).
    pub rate_hz: u32,
    /// Changes whenever this slot's request changes (key per-slot state on it).
    pub generation: u32,
    /// Floats a submission must carry: 2 × `size` (scope) or `size` (spectrum).
    pub values: u32,
}

/// What `loophole_analysis_read_tap` copied. The caller sets `struct_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopholeTapRead {
    /// `sizeof(LoopholeTapRead)`, set by the caller.
    pub struct_size: u32,
    /// Index (in the tap's stream since create) of the first sample copied.
    pub first: u64,
    /// Samples copied to `out[0..samples]`, oldest first, contiguous from `first`.
    pub samples: u64,
    /// Samples between the previous read's end and `first` this reader never got (overwritten,
    /// or skipped by `LOOPHOLE_TAP_LATEST`).
    pub missed: u64,
}

/// One command for the engine, given to the drain callback. Filled by the library; valid only
/// during the callback. Fields that `op` does not use are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopholeCommand {
    /// `sizeof(LoopholeCommand)` of the library (fields may be added at the end later).
    pub struct_size: u32,
    /// The client's request id (for logs; the library matches the answer itself).
    pub id: u32,
    /// One of `LOOPHOLE_OP_*`.
    pub op: u32,
    /// `PARAM_SET`: graph node id.
    pub node: u32,
    /// `PARAM_SET`: parameter index within the node.
    pub param: u32,
    /// `PARAM_SET`: target value.
    pub value: f32,
    /// `PARAM_SET`: ramp time in milliseconds (0 = jump).
    pub ramp_ms: f32,
    /// `TEMPO`: beats per minute.
    pub bpm: f32,
    /// `SEEK`: new play-head position, samples.
    pub position: u64,
    /// `LOOP`: first sample of the loop.
    pub loop_start: u64,
    /// `LOOP`: one past the last sample of the loop.
    pub loop_end: u64,
    /// `LOOP`: 1 = looping on, 0 = off.
    pub loop_enabled: u8,
}

/// What the drain callback decided for one command.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopholeOutcome {
    /// One of `LOOPHOLE_OUTCOME_*`.
    pub kind: u32,
    /// `APPLIED_AT`: offset in samples from the block's first sample; `REJECTED`: one of
    /// `LOOPHOLE_REJECT_*`; otherwise ignored.
    pub value: u32,
}

/// Transport telemetry published by the audio thread. Fill with [`loophole_transport_init`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoopholeTransport {
    /// `sizeof(LoopholeTransport)`, set by `loophole_transport_init`.
    pub struct_size: u32,
    /// Non-zero while the transport runs.
    pub playing: u8,
    /// Non-zero while looping is on.
    pub loop_enabled: u8,
    /// Tempo, beats per minute (a non-finite value is sent as 0).
    pub bpm: f32,
    /// Play-head position, samples.
    pub position: u64,
    /// Loop start, samples.
    pub loop_start: u64,
    /// Loop end, samples.
    pub loop_end: u64,
}

/// One request for the control thread. The caller sets `struct_size`; the library fills the
/// rest. Fields that `op` does not use are 0 (`kind` empty).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LoopholeControlRequest {
    /// `sizeof(LoopholeControlRequest)`, set by the caller.
    pub struct_size: u32,
    /// One of `LOOPHOLE_CONTROL_*`.
    pub op: u32,
    /// The client's command id (for logs; 0 for `ORPHANED`).
    pub id: u32,
    /// `ADD_NODE`, `REMOVE_NODE`: node id.
    pub node: u32,
    /// `CONNECT`, `DISCONNECT`: source node.
    pub from: u32,
    /// `CONNECT`, `DISCONNECT`: destination node.
    pub to: u32,
    /// `CONNECT`, `DISCONNECT`: source output port.
    pub from_port: u16,
    /// `CONNECT`, `DISCONNECT`: destination input port.
    pub to_port: u16,
    /// Pass to `loophole_control_reply`. 0 for `ORPHANED` (no reply expected).
    pub ticket: u64,
    /// `ADD_NODE`: node kind, NUL-terminated UTF-8 (at most `LOOPHOLE_MAX_NODE_KIND` bytes).
    pub kind: [c_char; LOOPHOLE_NODE_KIND_CAPACITY],
}

/// A snapshot of the audio endpoint's own counters. The caller sets `struct_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopholeAudioStats {
    /// `sizeof(LoopholeAudioStats)`, set by the caller.
    pub struct_size: u32,
    /// Commands this callback may still handle.
    pub remaining_budget: u32,
    /// Frames announced by all `loophole_audio_begin` calls so far.
    pub sample_clock: u64,
    /// The current block's first sample (the sample acks of this callback report).
    pub block_start: u64,
    /// Outcomes returned by drain callbacks with an unknown `kind` or reason (each was answered
    /// `unsupported`).
    pub invalid_outcomes: u64,
    /// 1 once the network side is gone (answers then go nowhere).
    pub net_gone: u8,
}

/// The drain callback: decides one command. Runs on the audio thread inside
/// `loophole_audio_drain`; must be real-time safe and must not unwind (no C++ exception). It
/// must not call any `loophole_audio_*` function on the handle being drained (the library is
/// inside a call on it: the handle is used by one call at a time).
pub type LoopholeApplyFn =
    Option<unsafe extern "C" fn(user: *mut c_void, cmd: *const LoopholeCommand) -> LoopholeOutcome>;

/// The network side: owns the network thread. Opaque.
pub struct LoopholeServer {
    handle: Option<ServerHandle>,
    announcement: Vec<u8>,
    port: u16,
    /// The analysis worker and the tap reader, until `loophole_server_take_analysis`.
    analysis: Option<(AnalysisWorker, TapReader)>,
    poisoned: AtomicBool,
}

/// The engine's analysis thread: reads the taps, the active requests, and submits computed
/// values. Opaque. Used by one thread at a time.
pub struct LoopholeAnalysis {
    worker: AnalysisWorker,
    taps: TapReader,
    poisoned: AtomicBool,
    /// Test hook: the next `loophole_analysis_requests` panics (see [`testing`]).
    panic_armed: bool,
}

/// The audio thread's endpoint. Opaque. Used by one thread at a time.
pub struct LoopholeAudio {
    ep: AudioEndpoint,
    invalid_outcomes: u64,
    poisoned: AtomicBool,
    /// Test hook: the next drain panics (see [`testing::arm_panic`]).
    panic_armed: bool,
}

/// The control thread's endpoint. Opaque.
pub struct LoopholeControl {
    ep: ControlEndpoint,
    /// Requests handed to C that await a reply: (ABI ticket, library ticket). Oldest first.
    pending: VecDeque<(u64, ControlTicket)>,
    next_ticket: u64,
    poisoned: AtomicBool,
    panic_armed: bool,
}

// ---------------------------------------------------------------------------------------------
// Guards: no unwinding crosses the boundary.

/// Runs `f` on the handle behind `h`; a NULL handle gives `null`, a poisoned one `poisoned`, a
/// panic poisons it and gives `panicked`.
fn with<H: Poison, R>(
    h: *mut H,
    null: R,
    poisoned: R,
    panicked: R,
    f: impl FnOnce(&mut H) -> R,
) -> R {
    // SAFETY: the caller passes NULL or a live handle from `loophole_create`, used by one thread
    // at a time as the header requires.
    let Some(h) = (unsafe { h.as_mut() }) else {
        return null;
    };
    if h.flag().load(Ordering::Relaxed) {
        return poisoned;
    }
    match catch_unwind(AssertUnwindSafe(|| f(h))) {
        Ok(r) => r,
        Err(_) => {
            h.flag().store(true, Ordering::Relaxed);
            panicked
        }
    }
}

/// A status-returning call on a handle.
fn status<H: Poison>(h: *mut H, f: impl FnOnce(&mut H) -> i32) -> i32 {
    with(
        h,
        LOOPHOLE_ERR_NULL,
        LOOPHOLE_ERR_POISONED,
        LOOPHOLE_ERR_PANIC,
        f,
    )
}

/// Whether the struct the caller sized behind `p` (it begins with its `u32 struct_size`,
/// `repr(C)`) is at least this library's `size_of::<T>()`, judged from that field alone, read
/// through the raw pointer: no reference to a `T` is made before, since over the smaller struct
/// of an older header it would cover bytes the caller does not own. `Err(LOOPHOLE_ERR_NULL)`
/// for NULL, `Err(LOOPHOLE_ERR_ABI_MISMATCH)` when smaller.
///
/// # Safety
/// `p` is NULL or points to `struct_size` readable bytes (at least 4), aligned for `u32`.
unsafe fn check_size<T>(p: *const T) -> Result<(), i32> {
    if p.is_null() {
        return Err(LOOPHOLE_ERR_NULL);
    }
    // SAFETY: non-NULL; the caller's struct begins with its aligned `u32 struct_size`.
    let size = unsafe { p.cast::<u32>().read() } as usize;
    if size < size_of::<T>() {
        return Err(LOOPHOLE_ERR_ABI_MISMATCH);
    }
    Ok(())
}

/// The caller's struct as `&mut T` once [`check_size`] accepts it.
///
/// # Safety
/// As [`check_size`]; and once its size is accepted, `p` is aligned for `T`, writable, and
/// nothing else accesses it during `'a`.
unsafe fn sized_mut<'a, T>(p: *mut T) -> Result<&'a mut T, i32> {
    // SAFETY: the caller's contract covers check_size's.
    unsafe { check_size(p.cast_const()) }?;
    // SAFETY: at least `size_of::<T>()` bytes, aligned and exclusive (the caller's contract).
    Ok(unsafe { &mut *p })
}

/// The caller's struct as `&T` once [`check_size`] accepts it.
///
/// # Safety
/// As [`check_size`]; and once its size is accepted, `p` is aligned for `T` and not written
/// during `'a`.
unsafe fn sized_ref<'a, T>(p: *const T) -> Result<&'a T, i32> {
    // SAFETY: the caller's contract covers check_size's.
    unsafe { check_size(p) }?;
    // SAFETY: at least `size_of::<T>()` readable bytes, aligned, not written (the contract).
    Ok(unsafe { &*p })
}

/// A call without a handle.
fn free_status(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(LOOPHOLE_ERR_PANIC)
}

trait Poison {
    fn flag(&self) -> &AtomicBool;
}
impl Poison for LoopholeServer {
    fn flag(&self) -> &AtomicBool {
        &self.poisoned
    }
}
impl Poison for LoopholeAudio {
    fn flag(&self) -> &AtomicBool {
        &self.poisoned
    }
}
impl Poison for LoopholeAnalysis {
    fn flag(&self) -> &AtomicBool {
        &self.poisoned
    }
}
impl Poison for LoopholeControl {
    fn flag(&self) -> &AtomicBool {
        &self.poisoned
    }
}

/// Frees a handle from `Box::into_raw`. Never unwinds (a panicking drop is swallowed).
fn free_box<H>(h: *mut H) {
    if h.is_null() {
        return;
    }
    // SAFETY: `h` came from `Box::into_raw` in `loophole_create` and is freed once (header rule).
    let b = unsafe { Box::from_raw(h) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
}

// ---------------------------------------------------------------------------------------------
// Library-wide functions.

/// The library's ABI version ([`LOOPHOLE_IPC_ABI_VERSION`] when it was built).
///
/// [any-thread] Never blocks, never allocates.
#[no_mangle]
pub extern "C" fn loophole_abi_version() -> u32 {
    LOOPHOLE_IPC_ABI_VERSION
}

/// A static, NUL-terminated English name for a status code (`"unknown status"` for any other
/// value). Never NULL; never free it.
///
/// [any-thread] Never blocks, never allocates.
#[no_mangle]
pub extern "C" fn loophole_status_str(status: i32) -> *const c_char {
    let s: &'static CStr = match status {
        LOOPHOLE_OK => c"ok",
        LOOPHOLE_ERR_NULL => c"a required pointer argument was NULL",
        LOOPHOLE_ERR_ABI_MISMATCH => {
            c"ABI version or struct size mismatch between header and library"
        }
        LOOPHOLE_ERR_INVALID_ARGUMENT => c"invalid argument",
        LOOPHOLE_ERR_CANNOT_START => c"the server could not start",
        LOOPHOLE_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        LOOPHOLE_ERR_TIMEOUT => c"timed out",
        LOOPHOLE_ERR_SERVER_GONE => c"the network thread has stopped",
        LOOPHOLE_ERR_UNKNOWN_TICKET => c"no request awaits a reply with this ticket",
        LOOPHOLE_ERR_PANIC => c"internal panic; the handle is poisoned",
        LOOPHOLE_ERR_POISONED => c"the handle is poisoned by an earlier panic",
        LOOPHOLE_ERR_STALE => c"the analysis request changed or ended; value dropped",
        LOOPHOLE_ERR_WRONG_LENGTH => c"wrong number of values for this analysis request",
        LOOPHOLE_ERR_NOT_CONFIGURED => c"not configured at create (or already taken)",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// Nanoseconds on the library's monotonic clock (`CLOCK_MONOTONIC` through the vDSO: no system
/// call) since a process epoch fixed by the first call (`loophole_create` makes that call).
/// Pass it to `loophole_audio_begin`/`loophole_audio_end`.
///
/// [any-thread] [audio-thread] after `loophole_create`. Never blocks, never allocates.
#[no_mangle]
pub extern "C" fn loophole_now_ns() -> u64 {
    catch_unwind(clock::now_ns).unwrap_or(0)
}

/// Fills the caller's config with the defaults, its `struct_size` (= `size`) and
/// `abi_version`. `size` is `sizeof(LoopholeConfig)` as the caller's header declares it: this
/// header's size, or the first ABI 1 header's (the fields up to `supervisor_pid`, padded), of
/// which only those fields are written. Exactly `size` bytes or fewer are written.
///
/// [any-thread] Never blocks, never allocates. `LOOPHOLE_ERR_NULL` for NULL,
/// `LOOPHOLE_ERR_ABI_MISMATCH` (nothing written) for any other size.
#[no_mangle]
pub unsafe extern "C" fn loophole_config_init_sized(cfg: *mut LoopholeConfig, size: usize) -> i32 {
    if cfg.is_null() {
        return LOOPHOLE_ERR_NULL;
    }
    let n = match size {
        s if s == size_of::<LoopholeConfig>() => s,
        CONFIG_V1_SIZE => CONFIG_V1_FIELDS,
        _ => return LOOPHOLE_ERR_ABI_MISMATCH,
    };
    let d = LoopholeConfig {
        struct_size: size as u32,
        ..config_defaults()
    };
    // SAFETY: `cfg` is non-NULL and has `size >= n` writable bytes (caller contract); the first
    // `n` bytes of `d` are whole fields of the same layout (the earlier struct is a prefix).
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const d).cast::<u8>(), cfg.cast::<u8>(), n);
    }
    LOOPHOLE_OK
}

/// The first ABI 1 header's initialiser, kept for programs built against that header: the
/// same as `loophole_config_init_sized(cfg, <that header's sizeof(LoopholeConfig)>)`. It writes
/// only the fields up to `supervisor_pid`, and the `struct_size` it sets makes
/// `loophole_create` read no later field: `analysis_taps` stays 0 whatever is stored there
/// (`loophole_server_take_analysis` then returns `LOOPHOLE_ERR_NOT_CONFIGURED`). New code calls
/// `loophole_config_init_sized(&cfg, sizeof cfg)`.
///
/// [any-thread] Never blocks, never allocates. Returns `LOOPHOLE_ERR_NULL` for NULL.
#[no_mangle]
pub unsafe extern "C" fn loophole_config_init(cfg: *mut LoopholeConfig) -> i32 {
    // SAFETY: the caller's struct is at least the first header's size (caller contract).
    unsafe { loophole_config_init_sized(cfg, CONFIG_V1_SIZE) }
}

/// Every field's default; `struct_size` = this header's size.
fn config_defaults() -> LoopholeConfig {
    LoopholeConfig {
        struct_size: size_of::<LoopholeConfig>() as u32,
        abi_version: LOOPHOLE_IPC_ABI_VERSION,
        host: std::ptr::null(),
        token: std::ptr::null(),
        engine_name: std::ptr::null(),
        connection_file: std::ptr::null(),
        port: 0,
        port_range_last: 0,
        token_from_env: 0,
        sample_rate: 48_000,
        block_size: 128,
        meter_channels: 2,
        command_capacity: 256,
        reply_capacity: 512,
        drain_budget: 32,
        control_capacity: 64,
        supervisor_pid: 0,
        analysis_taps: 0,
        tap_capacity: 4096,
    }
}

/// Fills `t` with a stopped transport at sample 0, 120 bpm, no loop, and its `struct_size`.
///
/// [any-thread] [audio-thread] Never blocks, never allocates. `LOOPHOLE_ERR_NULL` for NULL.
#[no_mangle]
pub unsafe extern "C" fn loophole_transport_init(t: *mut LoopholeTransport) -> i32 {
    if t.is_null() {
        return LOOPHOLE_ERR_NULL;
    }
    // SAFETY: non-NULL, points to a writable LoopholeTransport (caller contract).
    unsafe { t.write(to_c_transport(&TransportState::default())) };
    LOOPHOLE_OK
}

/// Copies `msg` (truncated, NUL-terminated) into the caller's buffer, if there is one.
fn write_detail(err: *mut c_char, cap: usize, msg: &str) {
    if err.is_null() || cap == 0 {
        return;
    }
    let n = msg.len().min(cap - 1);
    // SAFETY: `err` has room for `cap` bytes (caller contract); we write `n + 1 <= cap`.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Reads an optional C string.
fn opt_str(p: *const c_char, what: &str) -> Result<Option<String>, String> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL C strings in the config are NUL-terminated and live for the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| format!("{what}: not UTF-8"))
}

/// What `loophole_create` builds.
struct Created {
    server: LoopholeServer,
    audio: LoopholeAudio,
    control: LoopholeControl,
}

fn nonzero(v: u32, what: &str) -> Result<usize, String> {
    if v == 0 {
        Err(format!("{what} must be > 0"))
    } else {
        Ok(v as usize)
    }
}

/// A queue's slots, `1..=LOOPHOLE_MAX_QUEUE_CAPACITY`: a larger value would be allocated at
/// once, and an allocation that fails aborts the process (no status could say why).
fn capacity(v: u32, what: &str) -> Result<usize, String> {
    if v > LOOPHOLE_MAX_QUEUE_CAPACITY {
        return Err(format!(
            "{what} {v} is outside 1..={LOOPHOLE_MAX_QUEUE_CAPACITY}"
        ));
    }
    nonzero(v, what)
}

/// A start-up error's text; a connection-file error names the file (the library's error is
/// `Copy` and cannot).
fn start_error(e: BindError, connection_file: Option<&std::path::Path>) -> String {
    match (e, connection_file) {
        (BindError::ConnectionFile { .. }, Some(p)) => format!("{e} ({})", p.display()),
        _ => e.to_string(),
    }
}

fn create(cfg: &LoopholeConfig) -> Result<Created, (i32, String)> {
    let invalid = |m: String| (LOOPHOLE_ERR_INVALID_ARGUMENT, m);
    let host = match opt_str(cfg.host, "host").map_err(invalid)? {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(h) => h
            .parse()
            .map_err(|_| invalid(format!("host: `{h}` is not an IP address")))?,
    };
    let mut token = opt_str(cfg.token, "token").map_err(invalid)?;
    if token.is_none() && cfg.token_from_env != 0 {
        token = token_from_env().map_err(|e| invalid(e.to_string()))?;
    }
    let token = token.filter(|t| !t.is_empty());
    let engine_name = opt_str(cfg.engine_name, "engine_name")
        .map_err(invalid)?
        .unwrap_or_else(|| "loophole-capi".to_owned());
    let connection_file = opt_str(cfg.connection_file, "connection_file")
        .map_err(invalid)?
        .map(PathBuf::from);
    let file_named = connection_file.clone();
    let port = match (cfg.port, cfg.port_range_last) {
        (0, 0) => PortPolicy::Ephemeral,
        (p, 0) => PortPolicy::Fixed(p),
        (first, last) if first >= 1 && last >= first => PortPolicy::Range { first, last },
        (first, last) => return Err(invalid(format!("port range {first}-{last} is empty"))),
    };
    if cfg.meter_channels == 0 || cfg.meter_channels > LOOPHOLE_MAX_METER_CHANNELS {
        return Err(invalid(format!(
            "meter_channels {} is outside 1..={LOOPHOLE_MAX_METER_CHANNELS}",
            cfg.meter_channels
        )));
    }
    let command_capacity = capacity(cfg.command_capacity, "command_capacity").map_err(invalid)?;
    let drain_budget = nonzero(cfg.drain_budget, "drain_budget").map_err(invalid)?;
    if drain_budget > command_capacity {
        return Err(invalid("drain_budget > command_capacity".into()));
    }
    if cfg.analysis_taps > LOOPHOLE_MAX_TAPS {
        return Err(invalid(format!(
            "analysis_taps {} is outside 0..={LOOPHOLE_MAX_TAPS}",
            cfg.analysis_taps
        )));
    }
    let taps = cfg.analysis_taps as usize;
    let rt = RtConfig::default()
        .with_taps(taps, cfg.tap_capacity as usize)
        .with_command_capacity(command_capacity)
        .with_reply_capacity(capacity(cfg.reply_capacity, "reply_capacity").map_err(invalid)?)
        .with_drain_budget(drain_budget)
        .with_meter_channels(cfg.meter_channels as usize)
        .with_sample_rate(cfg.sample_rate.max(1));
    nonzero(cfg.sample_rate, "sample_rate").map_err(invalid)?;
    nonzero(cfg.block_size, "block_size").map_err(invalid)?;
    let control_capacity = capacity(cfg.control_capacity, "control_capacity").map_err(invalid)?;

    let _ = clock::now_ns(); // fix the clock's epoch outside any audio callback
    let (audio, mut net) = bridge(&rt);
    let mut builder = Server::builder();
    let analysis = match net.take_taps() {
        Some(reader) => {
            let worker = builder
                .analysis_worker(cfg.analysis_taps as u16)
                .map_err(|e| (LOOPHOLE_ERR_CANNOT_START, e.to_string()))?;
            Some((worker, reader))
        }
        None => None,
    };
    let (handle, control) = builder
        .bind(host)
        .port(port)
        .token(token)
        .engine_name(engine_name)
        .connection_file(connection_file)
        .sample_rate(cfg.sample_rate)
        .block_size(cfg.block_size)
        .control_capacity(control_capacity)
        .supervisor_pid((cfg.supervisor_pid != 0).then_some(cfg.supervisor_pid))
        .spawn(net)
        .map_err(|e| {
            (
                LOOPHOLE_ERR_CANNOT_START,
                start_error(e, file_named.as_deref()),
            )
        })?;
    let announcement = handle.announcement().to_line().into_bytes();
    let port = handle.local_addr().port();
    Ok(Created {
        server: LoopholeServer {
            handle: Some(handle),
            announcement,
            port,
            analysis,
            poisoned: AtomicBool::new(false),
        },
        audio: LoopholeAudio {
            ep: audio,
            invalid_outcomes: 0,
            poisoned: AtomicBool::new(false),
            panic_armed: false,
        },
        control: LoopholeControl {
            ep: control,
            pending: VecDeque::with_capacity(control_capacity * 2 + 8),
            next_ticket: 0,
            poisoned: AtomicBool::new(false),
            panic_armed: false,
        },
    })
}

/// Copies the caller's config: the whole struct when `struct_size` is this header's, only the
/// fields before `analysis_taps` (the rest take their defaults) when it is the earlier
/// header's; `None` for any other size.
fn read_config(cfg: *const LoopholeConfig, struct_size: usize) -> Option<LoopholeConfig> {
    let n = match struct_size {
        s if s == size_of::<LoopholeConfig>() => s,
        CONFIG_V1_SIZE => CONFIG_V1_FIELDS,
        _ => return None,
    };
    let mut out = std::mem::MaybeUninit::new(config_defaults());
    // SAFETY: the caller's struct has `struct_size >= n` readable bytes, and `out` has
    // `size_of::<LoopholeConfig>() >= n`; the first `n` bytes are whole fields of the same
    // layout (the earlier header's struct is a prefix of this one).
    unsafe {
        std::ptr::copy_nonoverlapping(cfg.cast::<u8>(), out.as_mut_ptr().cast::<u8>(), n);
        Some(out.assume_init())
    }
}

/// Creates the bridge, binds the port and starts the network thread. On success the three
/// handles are written to `*out_server`, `*out_audio`, `*out_control` (each owned by the caller:
/// free each with its `*_free`, in any order); on failure they are set to NULL and, when `err`
/// is not NULL, a NUL-terminated reason (truncated to `err_cap` bytes) is copied into `err`.
///
/// Checks `cfg->abi_version == LOOPHOLE_IPC_ABI_VERSION` and `cfg->struct_size ==
/// sizeof(LoopholeConfig)` or the earlier header's size, without `analysis_taps` and
/// `tap_capacity`, which then take their defaults (`LOOPHOLE_ERR_ABI_MISMATCH`), then every field
/// (`LOOPHOLE_ERR_INVALID_ARGUMENT`); `LOOPHOLE_ERR_CANNOT_START` when binding fails;
/// `LOOPHOLE_ERR_NULL` for a NULL `cfg` or out pointer.
///
/// Print the announcement (`loophole_server_announcement`) on stdout yourself, then flush
/// stdout (`fflush`): a supervisor reads it through a pipe, which C buffers fully, so an
/// unflushed line never arrives. The library never writes stdout.
///
/// [control-thread] Allocates everything the handles will ever use; blocks to bind and to start
/// the network thread.
#[no_mangle]
pub unsafe extern "C" fn loophole_create(
    cfg: *const LoopholeConfig,
    out_server: *mut *mut LoopholeServer,
    out_audio: *mut *mut LoopholeAudio,
    out_control: *mut *mut LoopholeControl,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    free_status(|| {
        if out_server.is_null() || out_audio.is_null() || out_control.is_null() {
            write_detail(err, err_cap, "an out pointer is NULL");
            return LOOPHOLE_ERR_NULL;
        }
        // SAFETY: the three out pointers are non-NULL and writable (caller contract).
        unsafe {
            *out_server = std::ptr::null_mut();
            *out_audio = std::ptr::null_mut();
            *out_control = std::ptr::null_mut();
        }
        // SAFETY: NULL or a readable LoopholeConfig (caller contract). Only the version fields
        // are read before the size is known to match.
        if cfg.is_null() {
            write_detail(err, err_cap, "cfg is NULL");
            return LOOPHOLE_ERR_NULL;
        }
        // SAFETY: non-NULL and readable for at least the two leading u32 fields (every layout).
        let (struct_size, abi_version) = unsafe {
            let head = cfg.cast::<u32>();
            (head.read() as usize, head.add(1).read())
        };
        let Some(cfg) = read_config(cfg, struct_size) else {
            write_detail(
                err,
                err_cap,
                &format!(
                    "header ABI {abi_version} (config size {struct_size}), library ABI {} \
                     (config size {} or {CONFIG_V1_SIZE})",
                    LOOPHOLE_IPC_ABI_VERSION,
                    size_of::<LoopholeConfig>()
                ),
            );
            return LOOPHOLE_ERR_ABI_MISMATCH;
        };
        let cfg = &cfg;
        if cfg.abi_version != LOOPHOLE_IPC_ABI_VERSION {
            write_detail(
                err,
                err_cap,
                &format!(
                    "header ABI {} (config size {}), library ABI {} (config size {})",
                    cfg.abi_version,
                    cfg.struct_size,
                    LOOPHOLE_IPC_ABI_VERSION,
                    size_of::<LoopholeConfig>()
                ),
            );
            return LOOPHOLE_ERR_ABI_MISMATCH;
        }
        match create(cfg) {
            Ok(c) => {
                // SAFETY: checked non-NULL above.
                unsafe {
                    *out_server = Box::into_raw(Box::new(c.server));
                    *out_audio = Box::into_raw(Box::new(c.audio));
                    *out_control = Box::into_raw(Box::new(c.control));
                }
                LOOPHOLE_OK
            }
            Err((code, msg)) => {
                write_detail(err, err_cap, &msg);
                code
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Server.

/// Copies the announcement line (`LOOPHOLE_LISTEN {...}`, no newline) NUL-terminated into
/// `buf`. `*out_len` (if not NULL) gets its length without the NUL, whatever the outcome: a
/// NULL `buf` (`LOOPHOLE_ERR_NULL`) or a short one (`LOOPHOLE_ERR_BUFFER_TOO_SMALL` when
/// `buf_cap <= length`, nothing copied) still reports it, so a caller can ask for the length
/// first. Valid after `loophole_server_shutdown` too.
///
/// [control-thread] (or any one thread at a time: like every handle, never by two threads at
/// once). Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_announcement(
    server: *mut LoopholeServer,
    buf: *mut c_char,
    buf_cap: usize,
    out_len: *mut usize,
) -> i32 {
    status(server, |s| {
        let line = &s.announcement;
        if !out_len.is_null() {
            // SAFETY: non-NULL and writable (caller contract).
            unsafe { *out_len = line.len() };
        }
        if buf.is_null() {
            return LOOPHOLE_ERR_NULL;
        }
        if buf_cap <= line.len() {
            return LOOPHOLE_ERR_BUFFER_TOO_SMALL;
        }
        // SAFETY: `buf` has `buf_cap > line.len()` writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(line.as_ptr(), buf.cast::<u8>(), line.len());
            *buf.add(line.len()) = 0;
        }
        LOOPHOLE_OK
    })
}

/// The bound TCP port (0 for NULL or a poisoned handle).
///
/// [control-thread] Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_port(server: *mut LoopholeServer) -> u16 {
    with(server, 0, 0, 0, |s| s.port)
}

/// Whether the network thread still runs (false after shutdown, for NULL or poisoned).
///
/// [control-thread] Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_is_running(server: *mut LoopholeServer) -> bool {
    with(server, false, false, false, |s| {
        s.handle.as_ref().is_some_and(ServerHandle::is_running)
    })
}

/// Whether a client has completed the handshake and is connected now.
///
/// [control-thread] Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_has_client(server: *mut LoopholeServer) -> bool {
    with(server, false, false, false, |s| {
        s.handle.as_ref().is_some_and(ServerHandle::has_client)
    })
}

/// Stops the network thread: answers owed are sent (while the audio thread keeps draining),
/// clients get `goodbye shutdown`, the connection file is removed. Idempotent. The audio and
/// control handles stay valid (the audio side keeps working and never blocks; the control side
/// then reports `LOOPHOLE_ERR_SERVER_GONE`).
///
/// [control-thread] Blocks until the network thread has ended (bounded by its flush timeout).
/// May allocate.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_shutdown(server: *mut LoopholeServer) -> i32 {
    status(server, |s| {
        if let Some(h) = s.handle.take() {
            drop(h.shutdown());
        }
        LOOPHOLE_OK
    })
}

/// Shuts the server down (if not yet) and frees the handle. NULL is ignored. Works on a
/// poisoned handle. The handle must not be used afterwards.
///
/// [control-thread] Blocks like `loophole_server_shutdown`; frees memory.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_free(server: *mut LoopholeServer) {
    free_box(server);
}

// ---------------------------------------------------------------------------------------------
// Control.

fn control_request(req: &mut LoopholeControlRequest, op: &ControlOp) -> Option<u32> {
    req.op = match op {
        ControlOp::AddNode(a) => {
            req.node = a.node;
            let bytes = a.kind.as_bytes();
            let n = bytes.len().min(LOOPHOLE_MAX_NODE_KIND);
            for (dst, &src) in req.kind.iter_mut().zip(&bytes[..n]) {
                *dst = src as c_char;
            }
            LOOPHOLE_CONTROL_ADD_NODE
        }
        ControlOp::RemoveNode { node } => {
            req.node = *node;
            LOOPHOLE_CONTROL_REMOVE_NODE
        }
        ControlOp::Connect(e) | ControlOp::Disconnect(e) => {
            (req.from, req.from_port, req.to, req.to_port) = (e.from, e.from_port, e.to, e.to_port);
            if matches!(op, ControlOp::Connect(_)) {
                LOOPHOLE_CONTROL_CONNECT
            } else {
                LOOPHOLE_CONTROL_DISCONNECT
            }
        }
        ControlOp::Shutdown => LOOPHOLE_CONTROL_SHUTDOWN,
        ControlOp::Orphaned => LOOPHOLE_CONTROL_ORPHANED,
        _ => return None,
    };
    Some(req.op)
}

fn empty_request(struct_size: u32) -> LoopholeControlRequest {
    LoopholeControlRequest {
        struct_size,
        op: 0,
        id: 0,
        node: 0,
        from: 0,
        to: 0,
        from_port: 0,
        to_port: 0,
        ticket: 0,
        kind: [0; LOOPHOLE_NODE_KIND_CAPACITY],
    }
}

/// Waits up to `timeout_ms` for the next control request and writes it to `*out` (whose
/// `struct_size` the caller sets). Returns `LOOPHOLE_OK`, `LOOPHOLE_ERR_TIMEOUT`, or
/// `LOOPHOLE_ERR_SERVER_GONE` once the network thread has stopped and every request was taken.
/// Every request except `ORPHANED` must be answered exactly once with `loophole_control_reply`.
/// Requests of kinds this ABI version does not know are answered `unsupported` here, and an
/// `ADD_NODE` whose kind contains a NUL byte (which the NUL-terminated `kind` cannot carry)
/// `unknown_kind`: neither reaches the caller.
///
/// [control-thread] Blocks up to `timeout_ms` (0 = never blocks). May allocate.
#[no_mangle]
pub unsafe extern "C" fn loophole_control_recv(
    control: *mut LoopholeControl,
    timeout_ms: u32,
    out: *mut LoopholeControlRequest,
) -> i32 {
    status(control, |c| {
        // SAFETY: NULL or a writable LoopholeControlRequest of `struct_size` (caller contract).
        let out = match unsafe { sized_mut(out) } {
            Ok(out) => out,
            Err(code) => return code,
        };
        if std::mem::take(&mut c.panic_armed) {
            panic!("armed test panic");
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = match c.ep.recv_timeout(left) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => return LOOPHOLE_ERR_TIMEOUT,
                Err(RecvTimeoutError::Disconnected) => return LOOPHOLE_ERR_SERVER_GONE,
            };
            if let ControlOp::AddNode(a) = &req.op {
                if a.kind.as_bytes().contains(&0) {
                    // `kind` is NUL-terminated: C would see a shorter name than the client's.
                    let _ = c.ep.reply(req.ticket, Err(ControlError::UnknownKind));
                    continue;
                }
            }
            let mut r = empty_request(out.struct_size);
            r.id = req.id;
            let Some(op) = control_request(&mut r, &req.op) else {
                // A kind added to the library after this ABI: answer it, never drop it.
                let _ = c.ep.reply(req.ticket, Err(ControlError::Unsupported));
                continue;
            };
            if op != LOOPHOLE_CONTROL_ORPHANED {
                c.next_ticket += 1;
                r.ticket = c.next_ticket;
                c.pending.push_back((r.ticket, req.ticket));
            }
            *out = r;
            return LOOPHOLE_OK;
        }
    })
}

fn control_result(result: u32) -> Option<Result<(), ControlError>> {
    Some(match result {
        LOOPHOLE_CONTROL_RESULT_OK => Ok(()),
        LOOPHOLE_CONTROL_RESULT_UNKNOWN_NODE => Err(ControlError::UnknownNode),
        LOOPHOLE_CONTROL_RESULT_NODE_EXISTS => Err(ControlError::NodeExists),
        LOOPHOLE_CONTROL_RESULT_UNKNOWN_KIND => Err(ControlError::UnknownKind),
        LOOPHOLE_CONTROL_RESULT_UNSUPPORTED => Err(ControlError::Unsupported),
        LOOPHOLE_CONTROL_RESULT_FAILED => Err(ControlError::Failed),
        LOOPHOLE_CONTROL_RESULT_OUT_OF_RANGE => Err(ControlError::OutOfRange),
        _ => return None,
    })
}

/// Answers the request `ticket` with `result` (one of `LOOPHOLE_CONTROL_RESULT_*`; an unknown
/// value is `LOOPHOLE_ERR_INVALID_ARGUMENT` and answers nothing). Ticket 0 (`ORPHANED`) is a
/// no-op. `LOOPHOLE_ERR_UNKNOWN_TICKET` for a ticket never issued or already answered;
/// `LOOPHOLE_ERR_SERVER_GONE` if the network thread has stopped.
///
/// [control-thread] May block briefly if the reply queue is full; wakes the network thread (one
/// eventfd write). Never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_control_reply(
    control: *mut LoopholeControl,
    ticket: u64,
    result: u32,
) -> i32 {
    status(control, |c| {
        let Some(result) = control_result(result) else {
            return LOOPHOLE_ERR_INVALID_ARGUMENT;
        };
        if ticket == 0 {
            return LOOPHOLE_OK;
        }
        let Some(i) = c.pending.iter().position(|(t, _)| *t == ticket) else {
            return LOOPHOLE_ERR_UNKNOWN_TICKET;
        };
        let (_, real) = c.pending.remove(i).expect("index from position");
        match c.ep.reply(real, result) {
            Ok(()) => LOOPHOLE_OK,
            Err(_) => LOOPHOLE_ERR_SERVER_GONE,
        }
    })
}

/// Whether the server has reported the engine orphaned (see `LOOPHOLE_CONTROL_ORPHANED`).
///
/// [control-thread] Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_control_is_orphaned(control: *mut LoopholeControl) -> bool {
    with(control, false, false, false, |c| c.ep.is_orphaned())
}

/// Frees the control handle. Requests still unanswered are answered `control_unavailable` by
/// the network thread. NULL is ignored; works on a poisoned handle.
///
/// [control-thread] Never blocks; one eventfd write; frees memory (deallocates).
#[no_mangle]
pub unsafe extern "C" fn loophole_control_free(control: *mut LoopholeControl) {
    free_box(control);
}

// ---------------------------------------------------------------------------------------------
// Audio.

/// Starts a callback of `frames` frames at host time `now_ns` (`loophole_now_ns()`): resets the
/// drain budget, fixes the block's first sample, publishes the start time. NULL or a poisoned
/// handle: nothing happens.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_begin(audio: *mut LoopholeAudio, now_ns: u64, frames: u32) {
    with(audio, (), (), (), |a| a.ep.begin_callback(now_ns, frames));
}

fn c_command(cmd: &RtCommand) -> LoopholeCommand {
    let mut c = LoopholeCommand {
        struct_size: size_of::<LoopholeCommand>() as u32,
        id: cmd.id,
        ..LoopholeCommand::default()
    };
    c.op = match cmd.op {
        RtOp::Play => LOOPHOLE_OP_PLAY,
        RtOp::Stop => LOOPHOLE_OP_STOP,
        RtOp::Seek { position } => {
            c.position = position;
            LOOPHOLE_OP_SEEK
        }
        RtOp::Tempo { bpm } => {
            c.bpm = bpm;
            LOOPHOLE_OP_TEMPO
        }
        RtOp::Loop {
            start,
            end,
            enabled,
        } => {
            (c.loop_start, c.loop_end, c.loop_enabled) = (start, end, u8::from(enabled));
            LOOPHOLE_OP_LOOP
        }
        RtOp::ParamSet {
            node,
            param,
            value,
            ramp_ms,
        } => {
            (c.node, c.param, c.value, c.ramp_ms) = (node, param, value, ramp_ms);
            LOOPHOLE_OP_PARAM_SET
        }
        // Answered by the endpoint itself, never handed to the callback.
        RtOp::Ping { .. } => 0,
    };
    c
}

/// Validates an outcome from C.
fn rust_outcome(o: LoopholeOutcome) -> Option<Outcome> {
    Some(match o.kind {
        LOOPHOLE_OUTCOME_APPLIED => Outcome::Applied,
        LOOPHOLE_OUTCOME_APPLIED_AT => Outcome::AppliedAt { offset: o.value },
        LOOPHOLE_OUTCOME_REJECTED => Outcome::Rejected(match o.value {
            LOOPHOLE_REJECT_UNKNOWN_NODE => RejectReason::UnknownNode,
            LOOPHOLE_REJECT_UNKNOWN_PARAM => RejectReason::UnknownParam,
            LOOPHOLE_REJECT_OUT_OF_RANGE => RejectReason::OutOfRange,
            LOOPHOLE_REJECT_UNSUPPORTED => RejectReason::Unsupported,
            _ => return None,
        }),
        _ => return None,
    })
}

/// Hands queued commands, oldest first, to `apply(user, &cmd)` and answers each exactly once
/// with its outcome; at most the callback's remaining drain budget. Real-time pings are answered
/// inside and never reach `apply`. An outcome with an unknown `kind` or reason is answered
/// `unsupported` and counted (`LoopholeAudioStats::invalid_outcomes`). Returns the number of
/// commands answered (0 for NULL `audio`/`apply` or a poisoned handle).
///
/// [audio-thread] Wait-free and bounded: never blocks, never allocates, no system call (plus
/// whatever `apply` does, which must be real-time safe, must not unwind, and must not call
/// back into `audio`).
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_drain(
    audio: *mut LoopholeAudio,
    apply: LoopholeApplyFn,
    user: *mut c_void,
) -> u32 {
    let Some(apply) = apply else { return 0 };
    with(audio, 0, 0, 0, |a| {
        if std::mem::take(&mut a.panic_armed) {
            panic!("armed test panic");
        }
        let invalid = &mut a.invalid_outcomes;
        let n = a.ep.drain(|cmd| {
            let c = c_command(cmd);
            // SAFETY: `apply` is the caller's callback with this signature; `c` lives for the
            // call. It must not unwind (header contract; the C++ trampoline is noexcept).
            let o = unsafe { apply(user, &c) };
            rust_outcome(o).unwrap_or_else(|| {
                *invalid = invalid.wrapping_add(1);
                Outcome::Rejected(RejectReason::Unsupported)
            })
        });
        n as u32
    })
}

/// Adds one block of planar samples to the meters: `channels[c]` points to `n_frames` floats
/// of channel `c`, for `c < n_channels`. NULL channel pointers are skipped; channels beyond the
/// configured count are ignored.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call. O(n_channels ×
/// n_frames).
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_publish_meters(
    audio: *mut LoopholeAudio,
    channels: *const *const f32,
    n_channels: u32,
    n_frames: u32,
) {
    if channels.is_null() {
        return;
    }
    with(audio, (), (), (), |a| {
        for ch in 0..n_channels as usize {
            // SAFETY: `channels` has `n_channels` entries (caller contract).
            let p = unsafe { *channels.add(ch) };
            if p.is_null() {
                continue;
            }
            // SAFETY: a non-NULL entry points to `n_frames` readable floats (caller contract).
            let block = unsafe { std::slice::from_raw_parts(p, n_frames as usize) };
            a.ep.publish_meter(ch, block);
        }
    });
}

/// Adds one block of interleaved samples (`samples[frame * n_channels + channel]`,
/// `n_channels × n_frames` floats) to the meters. Channels beyond the configured count (or
/// beyond `LOOPHOLE_MAX_METER_CHANNELS`) are ignored.
///
/// [audio-thread] Wait-free: never blocks, never allocates (fixed stack arrays), no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_publish_meters_interleaved(
    audio: *mut LoopholeAudio,
    samples: *const f32,
    n_channels: u32,
    n_frames: u32,
) {
    if samples.is_null() || n_channels == 0 {
        return;
    }
    with(audio, (), (), (), |a| {
        let stride = n_channels as usize;
        let used = stride.min(MAX_METER_CHANNELS);
        // SAFETY: `samples` points to `n_channels * n_frames` readable floats (caller contract).
        let all = unsafe { std::slice::from_raw_parts(samples, stride * n_frames as usize) };
        let mut peak = [0.0f32; MAX_METER_CHANNELS];
        // Σx² in f64, as the Rust meters: the square of any finite f32 is then a normal
        // number (or 0), so loud signals do not overflow and quiet ones do not flush to 0.
        let mut sum = [0.0f64; MAX_METER_CHANNELS];
        for frame in all.chunks_exact(stride) {
            for ((x, p), s) in frame[..used].iter().zip(&mut peak).zip(&mut sum) {
                *p = p.max(x.abs());
                let d = f64::from(*x);
                *s += d * d;
            }
        }
        for ch in 0..used {
            a.ep.publish_levels(ch, peak[ch], sum[ch], u64::from(n_frames));
        }
    });
}

/// Adds levels the engine computed itself for `channel`: `peak` = max |x|, `sum_sq` = Σx² over
/// `frames` samples. O(1).
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_publish_levels(
    audio: *mut LoopholeAudio,
    channel: u32,
    peak: f32,
    sum_sq: f64,
    frames: u64,
) {
    with(audio, (), (), (), |a| {
        a.ep.publish_levels(channel as usize, peak, sum_sq, frames)
    });
}

fn to_c_transport(t: &TransportState) -> LoopholeTransport {
    LoopholeTransport {
        struct_size: size_of::<LoopholeTransport>() as u32,
        playing: u8::from(t.playing),
        loop_enabled: u8::from(t.loop_enabled),
        bpm: t.bpm,
        position: t.position,
        loop_start: t.loop_start,
        loop_end: t.loop_end,
    }
}

/// Publishes transport telemetry if that leaves room for the answers the rest of this
/// callback's budget could need (otherwise drops it and counts the drop). Returns whether it was
/// published; false also for NULL or a `struct_size` smaller than this ABI's. A non-finite
/// `bpm` (an engine fault) is published and sent as 0, as the spec's `transport.state` says.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_publish_transport(
    audio: *mut LoopholeAudio,
    transport: *const LoopholeTransport,
) -> bool {
    // SAFETY: NULL or a readable LoopholeTransport of `struct_size` (caller contract).
    let Ok(t) = (unsafe { sized_ref(transport) }) else {
        return false;
    };
    let state = TransportState {
        playing: t.playing != 0,
        position: t.position,
        bpm: t.bpm,
        loop_start: t.loop_start,
        loop_end: t.loop_end,
        loop_enabled: t.loop_enabled != 0,
    };
    with(audio, false, false, false, |a| {
        a.ep.publish_transport(&state)
    })
}

/// Counts an xrun reported by the host (shows in `engine.health`).
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_report_xrun(audio: *mut LoopholeAudio) {
    with(audio, (), (), (), |a| a.ep.report_xrun());
}

/// Ends the callback at host time `now_ns` (the same clock as `loophole_audio_begin`):
/// computes the DSP load and publishes the health counters.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_end(audio: *mut LoopholeAudio, now_ns: u64) {
    with(audio, (), (), (), |a| a.ep.end_callback(now_ns));
}

/// Changes the nominal sample rate (used from the next `loophole_audio_begin`; 0 is ignored).
///
/// [audio-thread] (or before the audio thread starts). Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_set_sample_rate(audio: *mut LoopholeAudio, hz: u32) {
    with(audio, (), (), (), |a| a.ep.set_sample_rate(hz));
}

/// Writes the endpoint's counters to `*out` (whose `struct_size` the caller sets).
/// `LOOPHOLE_ERR_ABI_MISMATCH` if `struct_size` is smaller than this ABI's.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_stats(
    audio: *mut LoopholeAudio,
    out: *mut LoopholeAudioStats,
) -> i32 {
    status(audio, |a| {
        // SAFETY: NULL or a writable LoopholeAudioStats of `struct_size` (caller contract).
        let out = match unsafe { sized_mut(out) } {
            Ok(out) => out,
            Err(code) => return code,
        };
        *out = LoopholeAudioStats {
            struct_size: out.struct_size,
            remaining_budget: a.ep.remaining_budget() as u32,
            sample_clock: a.ep.sample_clock(),
            block_start: a.ep.block_start(),
            invalid_outcomes: a.invalid_outcomes,
            net_gone: u8::from(a.ep.is_net_gone()),
        };
        LOOPHOLE_OK
    })
}

/// Frees the audio handle (the shared queues are freed when the last of the audio and network
/// sides is gone). NULL is ignored; works on a poisoned handle.
///
/// [control-thread] Never blocks; frees memory (deallocates), so never inside an audio callback.
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_free(audio: *mut LoopholeAudio) {
    free_box(audio);
}

/// Appends one block of a tapped signal (`n_frames` floats of one channel) to tap `tap`'s
/// ring, overwriting its oldest samples (the analysis reader counts what it missed).
/// `LOOPHOLE_ERR_INVALID_ARGUMENT` (nothing published) when `tap >= analysis_taps`;
/// `LOOPHOLE_ERR_NULL` for a NULL `block` with `n_frames > 0`.
///
/// [audio-thread] Wait-free: never blocks, never allocates, no system call (at most
/// `tap_capacity` atomic stores plus three).
#[no_mangle]
pub unsafe extern "C" fn loophole_audio_publish_tap(
    audio: *mut LoopholeAudio,
    tap: u32,
    block: *const f32,
    n_frames: u32,
) -> i32 {
    status(audio, |a| {
        let block = match (block.is_null(), n_frames) {
            (_, 0) => &[][..],
            (true, _) => return LOOPHOLE_ERR_NULL,
            // SAFETY: non-NULL, points to `n_frames` readable floats (caller contract).
            (false, n) => unsafe { std::slice::from_raw_parts(block, n as usize) },
        };
        match a.ep.publish_tap(tap as usize, block) {
            Ok(()) => LOOPHOLE_OK,
            Err(_) => LOOPHOLE_ERR_INVALID_ARGUMENT,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis (scope, spectrum): the engine's analysis thread.

/// Moves the analysis handle out of the server into `*out_analysis` (owned by the caller: free
/// it with `loophole_analysis_free`, in any order with the other handles). Once only:
/// `LOOPHOLE_ERR_NOT_CONFIGURED` (and `*out_analysis` NULL) when `analysis_taps` was 0 or the
/// handle was taken already.
///
/// [control-thread] Never blocks; allocates the handle.
#[no_mangle]
pub unsafe extern "C" fn loophole_server_take_analysis(
    server: *mut LoopholeServer,
    out_analysis: *mut *mut LoopholeAnalysis,
) -> i32 {
    if out_analysis.is_null() {
        return LOOPHOLE_ERR_NULL;
    }
    // SAFETY: non-NULL and writable (caller contract).
    unsafe { *out_analysis = std::ptr::null_mut() };
    status(server, |s| {
        let Some((worker, taps)) = s.analysis.take() else {
            return LOOPHOLE_ERR_NOT_CONFIGURED;
        };
        let h = Box::new(LoopholeAnalysis {
            worker,
            taps,
            poisoned: AtomicBool::new(false),
            panic_armed: false,
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out_analysis = Box::into_raw(h) };
        LOOPHOLE_OK
    })
}

fn stream_to_c(s: AnalysisStream) -> u32 {
    match s {
        AnalysisStream::Scope => LOOPHOLE_ANALYSIS_SCOPE,
        AnalysisStream::Spectrum => LOOPHOLE_ANALYSIS_SPECTRUM,
    }
}

fn stream_from_c(v: u32) -> Option<AnalysisStream> {
    match v {
        LOOPHOLE_ANALYSIS_SCOPE => Some(AnalysisStream::Scope),
        LOOPHOLE_ANALYSIS_SPECTRUM => Some(AnalysisStream::Spectrum),
        _ => None,
    }
}

fn request_to_c(r: &AnalysisRequest) -> LoopholeAnalysisRequest {
    LoopholeAnalysisRequest {
        struct_size: size_of::<LoopholeAnalysisRequest>() as u32,
        slot: r.slot as u32,
        stream: stream_to_c(r.stream),
        tap: u32::from(r.tap),
        size: u32::from(r.size),
        rate_hz: u32::from(r.rate_hz),
        generation: r.generation,
        values: r.values() as u32,
    }
}

/// Validates a request handed back from C (every field, every enum).
fn request_from_c(r: &LoopholeAnalysisRequest) -> Option<AnalysisRequest> {
    if r.slot >= LOOPHOLE_MAX_ANALYSIS_REQUESTS {
        return None;
    }
    Some(AnalysisRequest {
        slot: r.slot as usize,
        stream: stream_from_c(r.stream)?,
        tap: u16::try_from(r.tap).ok()?,
        size: u16::try_from(r.size).ok()?,
        rate_hz: u8::try_from(r.rate_hz).ok()?,
        generation: r.generation,
    })
}

/// Copies the active analysis requests into `out[0..*out_count]` (at most `cap`; pass an array
/// of `LOOPHOLE_MAX_ANALYSIS_REQUESTS` to get them all). `elem_size` is
/// `sizeof(LoopholeAnalysisRequest)` (`LOOPHOLE_ERR_ABI_MISMATCH` otherwise). Requests are
/// stale as soon as read: a value for one that changed is refused by `loophole_analysis_submit`
/// with `LOOPHOLE_ERR_STALE`. `LOOPHOLE_ERR_BUFFER_TOO_SMALL` when more were active than `cap`
/// (the first `cap` are copied).
///
/// [analysis-thread] (the engine's non-real-time worker, never the audio thread). Never
/// blocks, never allocates, no system call (one atomic load per slot).
#[no_mangle]
pub unsafe extern "C" fn loophole_analysis_requests(
    analysis: *mut LoopholeAnalysis,
    out: *mut LoopholeAnalysisRequest,
    cap: usize,
    elem_size: usize,
    out_count: *mut usize,
) -> i32 {
    status(analysis, |an| {
        if out_count.is_null() || (out.is_null() && cap > 0) {
            return LOOPHOLE_ERR_NULL;
        }
        if elem_size != size_of::<LoopholeAnalysisRequest>() {
            return LOOPHOLE_ERR_ABI_MISMATCH;
        }
        if std::mem::take(&mut an.panic_armed) {
            panic!("injected panic (testing::arm_analysis_panic)");
        }
        let mut n = 0usize;
        let mut more = false;
        for r in an.worker.requests() {
            if n == cap {
                more = true;
                break;
            }
            // SAFETY: `out` has `cap > n` writable elements (caller contract).
            unsafe { out.add(n).write(request_to_c(&r)) };
            n += 1;
        }
        // SAFETY: non-NULL and writable (caller contract).
        unsafe { *out_count = n };
        if more {
            LOOPHOLE_ERR_BUFFER_TOO_SMALL
        } else {
            LOOPHOLE_OK
        }
    })
}

/// Copies samples of tap `tap` into `out[0..n]`: `mode` `LOOPHOLE_TAP_LATEST` (the most recent
/// `min(n, tap_capacity)` samples) or `LOOPHOLE_TAP_NEXT` (the unread ones, oldest first).
/// `*info` (its `struct_size` set by the caller; NULL allowed) says what was copied. Never
/// returns torn samples. `LOOPHOLE_ERR_INVALID_ARGUMENT` for an unknown `mode` or
/// `tap >= analysis_taps`; `LOOPHOLE_ERR_ABI_MISMATCH` when `info->struct_size` is smaller than
/// this ABI's.
///
/// [analysis-thread] Never blocks, never allocates, no system call.
#[no_mangle]
pub unsafe extern "C" fn loophole_analysis_read_tap(
    analysis: *mut LoopholeAnalysis,
    tap: u32,
    mode: u32,
    out: *mut f32,
    n: usize,
    info: *mut LoopholeTapRead,
) -> i32 {
    status(analysis, |an| {
        // SAFETY: NULL (optional) or a writable LoopholeTapRead of `struct_size` (caller
        // contract).
        let info = match unsafe { sized_mut(info) } {
            Ok(i) => Some(i),
            Err(LOOPHOLE_ERR_NULL) => None,
            Err(code) => return code,
        };
        let out = match (out.is_null(), n) {
            (_, 0) => &mut [][..],
            (true, _) => return LOOPHOLE_ERR_NULL,
            // SAFETY: non-NULL, `n` writable floats (caller contract).
            (false, n) => unsafe { std::slice::from_raw_parts_mut(out, n) },
        };
        let got = match mode {
            LOOPHOLE_TAP_LATEST => an.taps.latest(tap as usize, out),
            LOOPHOLE_TAP_NEXT => an.taps.read(tap as usize, out),
            _ => return LOOPHOLE_ERR_INVALID_ARGUMENT,
        };
        let Ok(got) = got else {
            return LOOPHOLE_ERR_INVALID_ARGUMENT;
        };
        if let Some(i) = info {
            i.first = got.first;
            i.samples = got.samples as u64;
            i.missed = got.missed;
        }
        LOOPHOLE_OK
    })
}

/// Submits a computed value for `req` (as filled by `loophole_analysis_requests`): `values`
/// holds `req->values` floats (scope: minima then maxima; spectrum: dBFS per bin); `sample` is
/// the tap sample index of the window's last sample, `missed` the tap samples no value of this
/// request covered since the previous one, `param` the samples per point (scope) or the sample
/// rate in Hz (spectrum). Replaces a value the network thread has not taken yet. A value with
/// the `sample` of the window a session was last sent is not sent to it again (the same
/// window: envelope.md, "Rate and freshness"), so `sample` must advance with every new window.
///
/// Status: `LOOPHOLE_ERR_INVALID_ARGUMENT` for an unknown `req->stream`, a `slot` of
/// `LOOPHOLE_MAX_ANALYSIS_REQUESTS` or more, or a `tap`, `size` or `rate_hz` beyond the range of
/// its type (nothing submitted); `LOOPHOLE_ERR_WRONG_LENGTH` when `n_values != req->values`;
/// `LOOPHOLE_ERR_STALE` when the request changed or ended, or its fields are not those of the
/// active request in its slot (dropped; normal for a request read just before it changed);
/// `LOOPHOLE_ERR_SERVER_GONE` when the network thread is gone; `LOOPHOLE_ERR_ABI_MISMATCH`
/// when `req->struct_size` is smaller than this ABI's; `LOOPHOLE_ERR_NULL` for a NULL `req` or
/// `values`.
///
/// [analysis-thread] Never blocks, never allocates, no system call (the network thread takes
/// the value when the frame is due); it copies up to `LOOPHOLE_MAX_ANALYSIS_VALUES` floats, so
/// not from the audio thread.
#[no_mangle]
pub unsafe extern "C" fn loophole_analysis_submit(
    analysis: *mut LoopholeAnalysis,
    req: *const LoopholeAnalysisRequest,
    sample: u64,
    missed: u64,
    param: u32,
    values: *const f32,
    n_values: usize,
) -> i32 {
    status(analysis, |an| {
        // SAFETY: NULL or a readable LoopholeAnalysisRequest of `struct_size` (caller contract).
        let creq = match unsafe { sized_ref(req) } {
            Ok(r) => r,
            Err(code) => return code,
        };
        let Some(r) = request_from_c(creq) else {
            return LOOPHOLE_ERR_INVALID_ARGUMENT;
        };
        if n_values != r.values() {
            return LOOPHOLE_ERR_WRONG_LENGTH;
        }
        if values.is_null() {
            return LOOPHOLE_ERR_NULL;
        }
        // SAFETY: non-NULL, `n_values` readable floats (caller contract).
        let values = unsafe { std::slice::from_raw_parts(values, n_values) };
        let frame = AnalysisFrame {
            sample,
            missed,
            param,
            values,
        };
        match an.worker.submit(&r, &frame) {
            Ok(()) => LOOPHOLE_OK,
            Err(SubmitError::Stale) => LOOPHOLE_ERR_STALE,
            Err(SubmitError::WrongLength) => LOOPHOLE_ERR_WRONG_LENGTH,
            Err(SubmitError::Closed) => LOOPHOLE_ERR_SERVER_GONE,
            Err(_) => LOOPHOLE_ERR_INVALID_ARGUMENT,
        }
    })
}

/// Whether the network thread still exists (false after shutdown, for NULL or poisoned): the
/// analysis thread's loop condition.
///
/// [analysis-thread] Never blocks, never allocates.
#[no_mangle]
pub unsafe extern "C" fn loophole_analysis_is_connected(analysis: *mut LoopholeAnalysis) -> bool {
    with(analysis, false, false, false, |an| an.worker.is_connected())
}

/// Frees the analysis handle. NULL is ignored; works on a poisoned handle.
///
/// [analysis-thread] [control-thread] Never blocks; frees memory.
#[no_mangle]
pub unsafe extern "C" fn loophole_analysis_free(analysis: *mut LoopholeAnalysis) {
    free_box(analysis);
}

/// Hooks for this crate's own tests (not part of the C ABI; no symbol is exported).
#[doc(hidden)]
pub mod testing {
    use super::{AtomicBool, AudioEndpoint, LoopholeAnalysis, LoopholeAudio, LoopholeControl};

    /// Wraps a Rust [`AudioEndpoint`] (from `rt::bridge`) in an ABI handle, for benchmarks that
    /// drive the same bridge through the C ABI and directly. Free it with `loophole_audio_free`.
    pub fn wrap_audio(ep: AudioEndpoint) -> *mut LoopholeAudio {
        Box::into_raw(Box::new(LoopholeAudio {
            ep,
            invalid_outcomes: 0,
            poisoned: AtomicBool::new(false),
            panic_armed: false,
        }))
    }

    /// Makes the next `loophole_audio_drain` on `audio` panic inside the library.
    ///
    /// # Safety
    /// `audio` is a live handle not in use by another thread.
    pub unsafe fn arm_panic(audio: *mut LoopholeAudio) {
        // SAFETY: caller contract.
        unsafe { (*audio).panic_armed = true };
    }

    /// Makes the next `loophole_control_recv` on `control` panic inside the library.
    ///
    /// # Safety
    /// `control` is a live handle not in use by another thread.
    pub unsafe fn arm_control_panic(control: *mut LoopholeControl) {
        // SAFETY: caller contract.
        unsafe { (*control).panic_armed = true };
    }

    /// Makes the next `loophole_analysis_requests` on `analysis` panic inside the library.
    ///
    /// # Safety
    /// `analysis` is a live handle not in use by another thread.
    pub unsafe fn arm_analysis_panic(analysis: *mut LoopholeAnalysis) {
        // SAFETY: caller contract.
        unsafe { (*analysis).panic_armed = true };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller struct from an older header may be smaller than ours: its size is judged from
    /// the leading `struct_size` alone, over storage of exactly that size (here 4 bytes), and
    /// no reference to the whole struct is made for it. Controls: NULL is `ERR_NULL`, and a
    /// struct of this ABI's size is accepted (so the size check can pass as well as fail).
    #[test]
    fn a_smaller_caller_struct_is_judged_by_its_size_field_alone() {
        let mut small: u32 = 4;
        let p = (&raw mut small).cast::<LoopholeAudioStats>();
        // SAFETY: 4 writable, aligned bytes beginning with `struct_size`.
        let write = unsafe { sized_mut(p) };
        assert_eq!(write.err(), Some(LOOPHOLE_ERR_ABI_MISMATCH));
        // SAFETY: the same, read-only.
        let read = unsafe { sized_ref(p.cast_const()) };
        assert_eq!(read.err(), Some(LOOPHOLE_ERR_ABI_MISMATCH));
        // SAFETY: NULL is allowed.
        let null = unsafe { sized_mut(std::ptr::null_mut::<LoopholeAudioStats>()) };
        assert_eq!(null.err(), Some(LOOPHOLE_ERR_NULL));
        let mut full = LoopholeAudioStats {
            struct_size: size_of::<LoopholeAudioStats>() as u32,
            ..Default::default()
        };
        // SAFETY: a whole struct of this ABI.
        assert!(unsafe { sized_mut(&raw mut full) }.is_ok());
    }
}

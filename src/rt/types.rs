//! The fixed-size messages that cross the real-time bridge.
//!
//! Every type here is `Copy`, has no heap data and no `String`/`Vec`, and compiles without
//! `std`. Their size is fixed at compile time (asserted below), so a queue slot never grows.

use core::fmt;

/// The maximum number of metered channels (a DAW mixer meters every track: 512 is 256 stereo
/// tracks). A `meters` frame of this many channels at the longest number encoding is about
/// 14 KiB, well within the default `max_frame` of 64 KiB (checked by a unit test of `rt::meters`).
pub const MAX_METER_CHANNELS: usize = 512;

/// A command for the audio thread, tagged with the client's request id.
///
/// The id is opaque to the audio thread: it is copied into the one [`RtReply`] that answers
/// this command, so the network thread can match the answer to the request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RtCommand {
    /// The client's request id, echoed in the answer.
    pub id: u32,
    /// What to do.
    pub op: RtOp,
}

/// The operations the audio thread applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RtOp {
    /// Start the transport.
    Play,
    /// Stop the transport.
    Stop,
    /// Move the play head to `position` (in samples).
    Seek {
        /// New play-head position in samples.
        position: u64,
    },
    /// Set the tempo.
    Tempo {
        /// Beats per minute.
        bpm: f32,
    },
    /// Set the loop region and whether looping is on.
    Loop {
        /// First sample of the loop.
        start: u64,
        /// Sample one past the end of the loop.
        end: u64,
        /// Whether looping is enabled.
        enabled: bool,
    },
    /// Set a parameter of a graph node, optionally ramping to it.
    ParamSet {
        /// Graph node id.
        node: u32,
        /// Parameter index within the node.
        param: u32,
        /// Target value.
        value: f32,
        /// Ramp time in milliseconds; `0.0` means jump.
        ramp_ms: f32,
    },
    /// A real-time ping: answered by the audio endpoint itself with [`RtReply::Pong`], without
    /// reaching the engine's command handler. Measures the round trip through the audio thread.
    Ping {
        /// Opaque value echoed in the pong.
        nonce: u32,
    },
}

/// What the audio thread sends back: exactly one `Ack`, `Reject` or `Pong` per command, plus
/// transport telemetry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RtReply {
    /// The command `id` took effect at engine sample `sample`.
    Ack {
        /// The command's request id.
        id: u32,
        /// Engine sample clock at which the command took effect.
        sample: u64,
    },
    /// The command `id` was refused; the engine state is unchanged.
    Reject {
        /// The command's request id.
        id: u32,
        /// Why.
        reason: RejectReason,
    },
    /// Answer to [`RtOp::Ping`].
    Pong {
        /// The ping's request id.
        id: u32,
        /// The ping's nonce.
        nonce: u32,
        /// Engine sample clock at the start of the callback that answered.
        sample: u64,
    },
    /// Transport telemetry (not an answer to a command; may be dropped when the queue is full).
    Transport(TransportState),
}

impl RtReply {
    /// The request id this reply answers, or `None` for telemetry.
    pub const fn answers(&self) -> Option<u32> {
        match *self {
            RtReply::Ack { id, .. } | RtReply::Reject { id, .. } | RtReply::Pong { id, .. } => {
                Some(id)
            }
            RtReply::Transport(_) => None,
        }
    }
}

/// Why the audio thread refused a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No graph node with that id.
    UnknownNode,
    /// The node has no parameter with that index.
    UnknownParam,
    /// A value is outside its allowed range (or not finite).
    OutOfRange,
    /// The engine does not support this operation.
    Unsupported,
}

impl RejectReason {
    /// The stable wire code: `"unknown_node"`, `"unknown_param"`, `"out_of_range"`,
    /// `"unsupported"`.
    pub const fn as_code(self) -> &'static str {
        match self {
            RejectReason::UnknownNode => "unknown_node",
            RejectReason::UnknownParam => "unknown_param",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_code())
    }
}

impl core::error::Error for RejectReason {}

/// A snapshot of the transport, emitted by the audio thread as telemetry. The same `Copy` type
/// as the `transport.state` message body, so it goes on the wire without conversion.
pub use crate::message::TransportState;

/// What the engine's command handler decided for one command (returned by the closure given
/// to `AudioEndpoint::drain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied at the first sample of the current block.
    Applied,
    /// Applied `offset` samples into the current block (sample-accurate scheduling).
    AppliedAt {
        /// Offset from the block's first sample.
        offset: u32,
    },
    /// Refused; the engine state is unchanged.
    Rejected(RejectReason),
}

// Fixed sizes: a queue slot never grows. Changing a layout is a deliberate act.
const _: () = assert!(core::mem::size_of::<RtCommand>() <= 32);
const _: () = assert!(core::mem::size_of::<RtReply>() <= 48);

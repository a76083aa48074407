//! Error types of the protocol core and the stable wire error codes.
//!
//! Every error is a small `Copy` value: reporting one never allocates.

use core::fmt;

/// Why bytes from the peer could not be turned into a message.
///
/// [`DecodeError::code`] gives the wire code the engine answers with; [`DecodeError::is_fatal`]
/// says whether the connection must be closed (the frame boundaries are lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The peer's first bytes are not the preface: it does not speak this protocol.
    BadPreface {
        /// Index in the preface of the first byte that differs.
        offset: u8,
        /// The byte received there.
        byte: u8,
    },
    /// A header declares a payload above the limit. Fatal; the payload is never buffered.
    FrameTooLarge {
        /// The declared payload length.
        declared: u32,
        /// The limit in force.
        limit: u32,
    },
    /// Non-zero flags or reserved bits in a header.
    BadHeader {
        /// The flags byte received.
        flags: u8,
        /// The reserved field received.
        reserved: u16,
    },
    /// The header names an encoding this version does not define.
    UnsupportedEncoding {
        /// The encoding byte received.
        encoding: u8,
    },
    /// A JSON frame with a zero-length payload.
    EmptyPayload,
    /// The payload is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset in the payload of the first invalid sequence.
        offset: u32,
    },
    /// The payload is not one well-formed JSON value.
    InvalidJson {
        /// Byte offset in the payload where parsing failed.
        offset: u32,
    },
    /// The envelope is missing a key, has one of the wrong JSON type, or repeats one.
    InvalidEnvelope {
        /// The envelope key at fault (`"payload"` when the payload is not an object).
        key: &'static str,
        /// What is wrong with it.
        problem: EnvelopeProblem,
    },
    /// `type` is not one of `command`, `reply`, `telemetry`, `error`.
    UnknownType,
    /// A message of a type the receiver does not accept (e.g. a client sending a `reply`).
    UnexpectedType,
    /// `name` is well-formed but not in the catalogue for that type.
    UnknownMessage,
    /// The body does not match the message: a field missing, of the wrong type, or unknown.
    InvalidField {
        /// What the body decoder reported.
        problem: FieldProblem,
    },
    /// A field has the right type but a value outside its documented range.
    OutOfRange {
        /// The body field at fault.
        field: &'static str,
    },
    /// A caller's buffer cannot hold what the operation needs.
    BufferTooSmall,
}

/// What is wrong with an envelope key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeProblem {
    /// A required key is absent.
    Missing,
    /// The key holds the wrong JSON type or an invalid value.
    Invalid,
    /// The key appears twice.
    Duplicate,
}

/// What the body decoder reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// A field has the wrong JSON type or an unparsable number.
    WrongType,
    /// A required field is missing, or an unknown field is present.
    MissingOrUnknown,
    /// A string is longer than the field allows, or a list has too many items.
    TooLong,
    /// An integer does not fit its field (negative, or above the u16/u32/u64 maximum).
    NumberOutOfRange,
    /// Anything else the JSON decoder rejected.
    Other,
}

impl DecodeError {
    /// True when the connection cannot continue: the byte stream has lost its frame boundaries.
    pub const fn is_fatal(self) -> bool {
        matches!(self, Self::BadPreface { .. } | Self::FrameTooLarge { .. })
    }

    /// The stable wire error code for this error.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::BadPreface { .. } => ErrorCode::BadPreface,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::BadHeader { .. } => ErrorCode::BadHeader,
            Self::UnsupportedEncoding { .. } => ErrorCode::UnsupportedEncoding,
            Self::EmptyPayload | Self::InvalidJson { .. } => ErrorCode::InvalidJson,
            Self::InvalidUtf8 { .. } => ErrorCode::InvalidUtf8,
            Self::InvalidEnvelope { .. } => ErrorCode::InvalidEnvelope,
            Self::UnknownType | Self::UnexpectedType => ErrorCode::UnknownType,
            Self::UnknownMessage => ErrorCode::UnknownMessage,
            Self::InvalidField {
                problem: FieldProblem::NumberOutOfRange,
            } => ErrorCode::OutOfRange,
            Self::InvalidField { .. } => ErrorCode::InvalidField,
            Self::OutOfRange { .. } => ErrorCode::OutOfRange,
            Self::BufferTooSmall => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadPreface { offset, byte } => {
                write!(
                    f,
                    "not a Loophole peer: preface byte {offset} is {byte:#04x}"
                )
            }
            Self::FrameTooLarge { declared, limit } => {
                write!(f, "frame of {declared} bytes exceeds the limit of {limit}")
            }
            Self::BadHeader { flags, reserved } => write!(
                f,
                "header flags {flags:#04x} / reserved {reserved:#06x} must be zero"
            ),
            Self::UnsupportedEncoding { encoding } => {
                write!(f, "encoding {encoding:#04x} is not supported (1 = JSON)")
            }
            Self::EmptyPayload => f.write_str("empty payload: a frame must carry a JSON object"),
            Self::InvalidUtf8 { offset } => write!(f, "invalid UTF-8 at byte {offset}"),
            Self::InvalidJson { offset } => write!(f, "invalid JSON at byte {offset}"),
            Self::InvalidEnvelope { key, problem } => {
                let what = match problem {
                    EnvelopeProblem::Missing => "is missing",
                    EnvelopeProblem::Invalid => "has an invalid value",
                    EnvelopeProblem::Duplicate => "appears twice",
                };
                write!(f, "envelope key `{key}` {what}")
            }
            Self::UnknownType => f.write_str("unknown message type"),
            Self::UnexpectedType => f.write_str("message type not accepted in this direction"),
            Self::UnknownMessage => f.write_str("unknown message name"),
            Self::InvalidField { problem } => f.write_str(match problem {
                FieldProblem::WrongType => "body field has the wrong type",
                FieldProblem::MissingOrUnknown => "body field missing or unknown",
                FieldProblem::TooLong => "body string or list too long",
                FieldProblem::NumberOutOfRange => {
                    "body integer negative or too large for its field"
                }
                FieldProblem::Other => "body does not match the message",
            }),
            Self::OutOfRange { field } => write!(f, "body field `{field}` is out of range"),
            Self::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the frame.
    BufferTooSmall,
    /// The payload would exceed the frame limit.
    FrameTooLarge,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "output buffer too small for the frame",
            Self::FrameTooLarge => "payload exceeds the frame limit",
        })
    }
}

impl core::error::Error for EncodeError {}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $s:literal,)*) => {
        /// The stable, machine-readable error codes of `docs/specs/ipc/errors.md`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode { $($(#[$doc])* $variant,)* }

        impl ErrorCode {
            /// Every code, in the order of the spec.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s,)* }
            }

            /// The code for a wire string, if it is one of version 1's.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// Not sent (the peer is closed at once); used in logs.
    BadPreface = "bad_preface",
    /// Declared payload above `max_frame`; fatal.
    FrameTooLarge = "frame_too_large",
    /// Unknown encoding byte.
    UnsupportedEncoding = "unsupported_encoding",
    /// Non-zero flags or reserved bits.
    BadHeader = "bad_header",
    /// Payload not valid UTF-8.
    InvalidUtf8 = "invalid_utf8",
    /// Payload not one JSON object.
    InvalidJson = "invalid_json",
    /// Envelope key missing, invalid or repeated.
    InvalidEnvelope = "invalid_envelope",
    /// `type` not known.
    UnknownType = "unknown_type",
    /// `name` not known.
    UnknownMessage = "unknown_message",
    /// Body field missing, wrong type, or unknown.
    InvalidField = "invalid_field",
    /// Body value outside its range.
    OutOfRange = "out_of_range",
    /// A command before `hello`.
    HelloRequired = "hello_required",
    /// A second `hello`.
    AlreadyEstablished = "already_established",
    /// Protocol version not supported; fatal.
    ProtocolVersion = "protocol_version",
    /// Missing or wrong session token; fatal.
    BadToken = "bad_token",
    /// Another client holds the session; fatal.
    SessionBusy = "session_busy",
    /// No `hello` within the handshake timeout; fatal.
    HandshakeTimeout = "handshake_timeout",
    /// Client silent past the heartbeat timeout; fatal.
    HeartbeatTimeout = "heartbeat_timeout",
    /// Client read too slowly past the limit; fatal.
    SlowConsumer = "slow_consumer",
    /// The session ended (shutdown, or a half-closed client's flush time ran out) before the
    /// command was carried out; it was not.
    ShuttingDown = "shutting_down",
    /// The node does not exist.
    UnknownNode = "unknown_node",
    /// The parameter does not exist on the node.
    UnknownParam = "unknown_param",
    /// A node with that id exists already.
    NodeExists = "node_exists",
    /// The node kind is not known to the engine.
    UnknownKind = "unknown_kind",
    /// The engine does not support this command.
    Unsupported = "unsupported",
    /// No control handler is installed, or it has stopped.
    ControlUnavailable = "control_unavailable",
    /// The audio thread is gone.
    AudioUnavailable = "audio_unavailable",
    /// A 9th analysis subscription (`scope`/`spectrum`) in one session.
    TooManySubscriptions = "too_many_subscriptions",
    /// An engine fault.
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

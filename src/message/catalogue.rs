//! The message bodies of protocol version 1, one type per message (see
//! `docs/specs/ipc/envelope.md`). Strings are `heapless::String`s, lists `heapless::Vec`s: fixed
//! capacity, no heap.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use super::{Kind, Message};

/// Most meter channels a `meters` frame carries (the bridge's limit, `rt::MAX_METER_CHANNELS`).
pub const MAX_METER_CHANNELS: usize = crate::rt::MAX_METER_CHANNELS;
/// Longest `hello.client`, in bytes.
pub const MAX_CLIENT_NAME: usize = 64;
/// Longest session token, in bytes.
pub const MAX_TOKEN: usize = 128;
/// Longest `welcome.engine`, in bytes.
pub const MAX_ENGINE_NAME: usize = 64;
/// Longest node kind, in bytes.
pub const MAX_NODE_KIND: usize = 32;
/// Longest human-readable message in `error` and `log`, in bytes.
pub const MAX_TEXT: usize = 128;
/// Longest error code, in bytes.
pub const MAX_CODE: usize = 32;

fn is_false(b: &bool) -> bool {
    !*b
}

/// An optional command field: absent is `None`, but a JSON `null` is not a value of the field
/// (envelope.md: `null` is never a value), so it goes through `T`'s own decoder and fails there.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Writes an integer of an engine message at most 2^53 - 1 (envelope.md: every integer of the
/// protocol is exact as a JavaScript number), so no message fails its schema. Clamps, never
/// wraps: a transport position past the limit stays at it.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference
fn safe_u64<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64((*v).min(super::MAX_SAFE_INTEGER))
}

macro_rules! message {
    ($ty:ty, $kind:ident, $name:literal) => {
        impl Message for $ty {
            const KIND: Kind = Kind::$kind;
            const NAME: &'static str = $name;
        }
    };
}

macro_rules! empty_command {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $ty {}
        message!($ty, Command, $name);
    };
}

// ---- session ----

/// `command hello`: opens the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub protocol: u16,
    /// Client name and version, e.g. `aura/0.3.1`.
    pub client: String<MAX_CLIENT_NAME>,
    /// Session token handed to the engine by its supervisor.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String<MAX_TOKEN>>,
    /// The client can read binary attachments (framing.md §3.1). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachments: bool,
}
message!(Hello, Command, "hello");

/// `reply welcome`: the session is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the engine speaks.
    pub protocol: u16,
    /// Engine name and version.
    pub engine: String<MAX_ENGINE_NAME>,
    /// 16 lowercase hex digits, new for every engine process.
    pub instance: String<16>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Frames per audio callback.
    pub block_size: u32,
    /// Largest frame payload the engine accepts.
    pub max_frame: u32,
    /// The client must send something at least this often (ms).
    pub heartbeat_ms: u32,
    /// The engine drops a client silent for this long (ms).
    pub timeout_ms: u32,
    /// `scope`/`spectrum` values come as binary attachments in this session (the client asked
    /// and the engine agreed). Absent from an older engine: false.
    #[serde(default)]
    pub attachments: bool,
    /// Number of analysis taps (0 = no analysis streams). Absent from an older engine: 0.
    #[serde(default)]
    pub taps: u16,
}
message!(Welcome, Reply, "welcome");

/// `command ping`: liveness and round-trip measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    /// Echoed in the `pong`.
    pub nonce: u32,
    /// Client timestamp in µs, echoed back.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub t_client_us: Option<u64>,
    /// Go through the audio thread and back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rt: bool,
}
message!(Ping, Command, "ping");

/// `reply pong`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u32,
    /// The ping's client timestamp, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_client_us: Option<u64>,
    /// Engine monotonic clock in µs.
    pub t_engine_us: u64,
    /// Engine sample clock when the audio thread saw the ping (real-time pings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
}
message!(Pong, Reply, "pong");

empty_command!(
    /// `command goodbye`: the client ends the session; acked, then closed.
    Goodbye,
    "goodbye"
);

/// Why the engine ends a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// The engine is shutting down.
    Shutdown,
    /// The client was silent past the heartbeat timeout.
    HeartbeatTimeout,
    /// The client read too slowly for too long.
    SlowConsumer,
}

/// `error goodbye`: the engine ends the session and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodbyeNotice {
    /// Why.
    pub reason: GoodbyeReason,
}
message!(GoodbyeNotice, Error, "goodbye");

// ---- transport ----

empty_command!(
    /// `command transport.play`.
    Play,
    "transport.play"
);
empty_command!(
    /// `command transport.stop`.
    Stop,
    "transport.stop"
);

/// `command transport.seek`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seek {
    /// New transport position in samples.
    pub sample: u64,
}
message!(Seek, Command, "transport.seek");

/// `command transport.tempo`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tempo {
    /// Beats per minute, 20 to 999.
    pub bpm: f32,
}
message!(Tempo, Command, "transport.tempo");

/// `command transport.loop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loop {
    /// Loop start, samples.
    pub start: u64,
    /// Loop end, samples; greater than `start` when enabled.
    pub end: u64,
    /// Whether the transport loops.
    pub enabled: bool,
}
message!(Loop, Command, "transport.loop");

/// `telemetry transport.state`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportState {
    /// Whether the transport runs.
    pub playing: bool,
    /// Transport position, samples. Written at most 2^53 - 1 (clamped).
    #[serde(serialize_with = "safe_u64")]
    pub position: u64,
    /// Tempo.
    pub bpm: f32,
    /// Loop start, samples. Written at most 2^53 - 1 (clamped).
    #[serde(serialize_with = "safe_u64")]
    pub loop_start: u64,
    /// Loop end, samples. Written at most 2^53 - 1 (clamped).
    #[serde(serialize_with = "safe_u64")]
    pub loop_end: u64,
    /// Whether the transport loops.
    pub loop_enabled: bool,
}
message!(TransportState, Telemetry, "transport.state");

impl Default for TransportState {
    /// Stopped at sample 0, 120 bpm, no loop: an engine's state before any command.
    fn default() -> Self {
        Self {
            playing: false,
            position: 0,
            bpm: 120.0,
            loop_start: 0,
            loop_end: 0,
            loop_enabled: false,
        }
    }
}

// ---- parameters ----

/// `command param.set`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSet {
    /// Node id.
    pub node: u32,
    /// Parameter id on that node.
    pub param: u32,
    /// New value (finite).
    pub value: f32,
    /// Ramp duration in ms, 0 to 60 000; absent or 0 means immediate.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ramp_ms: Option<f32>,
}
message!(ParamSet, Command, "param.set");

// ---- graph and engine (control route) ----

/// `command graph.add_node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    /// Id chosen by the client.
    pub node: u32,
    /// Node kind, e.g. `osc`.
    pub kind: String<MAX_NODE_KIND>,
}
message!(AddNode, Command, "graph.add_node");

/// `command graph.remove_node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveNode {
    /// Node id.
    pub node: u32,
}
message!(RemoveNode, Command, "graph.remove_node");

/// An edge of the graph: the body of `graph.connect` and `graph.disconnect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Source node.
    pub from: u32,
    /// Source output port.
    pub from_port: u16,
    /// Destination node.
    pub to: u32,
    /// Destination input port.
    pub to_port: u16,
}

/// `command graph.connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Connect(pub Edge);
message!(Connect, Command, "graph.connect");

/// `command graph.disconnect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Disconnect(pub Edge);
message!(Disconnect, Command, "graph.disconnect");

empty_command!(
    /// `command engine.shutdown`: acked, then the engine says goodbye and exits.
    Shutdown,
    "engine.shutdown"
);

// ---- telemetry ----

/// A telemetry stream a client can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// `meters`.
    #[serde(rename = "meters")]
    Meters,
    /// `transport.state`.
    #[serde(rename = "transport.state")]
    Transport,
    /// `engine.health`.
    #[serde(rename = "engine.health")]
    Health,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 3] = [Stream::Meters, Stream::Transport, Stream::Health];

    /// Index into per-stream tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// `command telemetry.subscribe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// Which stream.
    pub stream: Stream,
    /// Frames per second, 1 to 120.
    pub rate_hz: u16,
}
message!(Subscribe, Command, "telemetry.subscribe");

/// `command telemetry.unsubscribe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    /// Which stream.
    pub stream: Stream,
}
message!(Unsubscribe, Command, "telemetry.unsubscribe");

/// `telemetry meters`: peak and RMS per channel over the interval since the previous frame.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meters {
    /// Peak linear amplitude per channel.
    pub peak: Vec<f32, MAX_METER_CHANNELS>,
    /// RMS linear amplitude per channel.
    pub rms: Vec<f32, MAX_METER_CHANNELS>,
}
message!(Meters, Telemetry, "meters");

/// `telemetry engine.health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Audio callbacks run.
    pub callbacks: u64,
    /// Xruns reported by the host.
    pub xruns: u64,
    /// Largest DSP load (callback time / period) in the last interval.
    pub dsp_load: f32,
    /// Commands waiting in the audio queue.
    pub cmd_queue_len: u32,
    /// Capacity of the audio queue.
    pub cmd_queue_capacity: u32,
    /// High-water mark of the audio queue.
    pub cmd_queue_high: u32,
    /// High-water mark of the reply queue.
    pub reply_queue_high: u32,
    /// Telemetry the audio thread dropped because its queue was full.
    pub telemetry_dropped: u64,
    /// Telemetry frames not sent to a slow client.
    pub telemetry_shed: u64,
}
message!(Health, Telemetry, "engine.health");

// ---- replies and diagnostics ----

/// `reply ack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Engine sample clock at which an audio-route command took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
}
message!(Ack, Reply, "ack");

/// `error error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (see [`crate::ErrorCode`]).
    pub code: String<MAX_CODE>,
    /// For people; may change between versions.
    pub message: String<MAX_TEXT>,
}
message!(ErrorBody, Error, "error");

/// Severity of a `log` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// `error log`: a diagnostic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// Severity.
    pub level: LogLevel,
    /// Text.
    pub message: String<MAX_TEXT>,
}
message!(Log, Error, "log");

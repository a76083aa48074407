//! The envelope and the typed message catalogue (normative text: `docs/specs/ipc/envelope.md`).
//!
//! Decoding is two steps, because serde's tagged enums need an allocator: [`Envelope::parse`]
//! reads `type`, `name`, `id`, `ref` and the byte range of `body` (keys in any order), then the
//! body is decoded by name with `serde-json-core` into a fixed-size type. Encoding writes the
//! envelope around a body serialized straight into the caller's buffer. Nothing allocates.

mod catalogue;
pub mod scan;

pub use catalogue::*;

use core::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, EnvelopeProblem, ErrorCode, FieldProblem};
use crate::frame;

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest integer the protocol carries: 2^53 - 1, so a JavaScript `number` holds it exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Longest decoded string in a body, in bytes (the unescape scratch buffer's size).
const UNESCAPE_SCRATCH: usize = 256;

/// The envelope's `type`: the logical channel of the decision record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client to engine; carries `id`.
    Command,
    /// Engine to client; carries `ref`.
    Reply,
    /// Engine to client; state streams.
    Telemetry,
    /// Engine to client; errors and diagnostics.
    Error,
}

impl Kind {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Reply => "reply",
            Self::Telemetry => "telemetry",
            Self::Error => "error",
        }
    }

    fn from_raw(raw: &[u8]) -> Option<Self> {
        match raw {
            b"command" => Some(Self::Command),
            b"reply" => Some(Self::Reply),
            b"telemetry" => Some(Self::Telemetry),
            b"error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A message body type: its envelope `type` and `name` are fixed by the type.
pub trait Message: Serialize {
    /// The envelope `type`.
    const KIND: Kind;
    /// The envelope `name`.
    const NAME: &'static str;
}

/// A parsed envelope, borrowing from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `type`.
    pub kind: Kind,
    /// `name` (checked to be 1-32 bytes of `a-z0-9._`).
    pub name: &'a str,
    /// `id` (commands).
    pub id: Option<u32>,
    /// `ref` (replies, and errors about a known command).
    pub reference: Option<u32>,
    /// The raw JSON text of `body` (an object).
    pub body: &'a [u8],
}

/// What [`Envelope::parse`] collects before it checks.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    reference: Option<&'a [u8]>,
    body: Option<&'a [u8]>,
}

fn set<'a>(slot: &mut Option<&'a [u8]>, key: &'static str, v: &'a [u8]) -> Result<(), DecodeError> {
    if slot.replace(v).is_some() {
        return Err(invalid(key, EnvelopeProblem::Duplicate));
    }
    Ok(())
}

const fn invalid(key: &'static str, problem: EnvelopeProblem) -> DecodeError {
    DecodeError::InvalidEnvelope { key, problem }
}

/// A JSON integer in 0..=u32::MAX, written without sign, fraction or exponent.
fn parse_u32(raw: &[u8]) -> Option<u32> {
    if raw.is_empty() || raw.len() > 10 || (raw.len() > 1 && raw[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in raw {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    u32::try_from(v).ok()
}

/// The contents of a JSON string without escapes; `None` if `raw` is not such a string.
fn plain_string(raw: &[u8]) -> Option<&[u8]> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'\\')).then_some(inner)
}

/// The bytes before the next `"` and the bytes after it.
fn until_quote(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let q = s.iter().position(|&b| b == b'"')?;
    Some((&s[..q], &s[q + 1..]))
}

/// A u32 at the start of `s` and what follows it.
fn number_after(s: &[u8]) -> Option<(Option<u32>, &[u8])> {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    Some((Some(parse_u32(&s[..end])?), &s[end..]))
}

fn valid_name(name: &[u8]) -> bool {
    (1..=32).contains(&name.len())
        && name
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_'))
}

impl<'a> Envelope<'a> {
    /// Parses a JSON payload's envelope. The body is only located, not decoded.
    ///
    /// Checks, in order: UTF-8, JSON syntax, that the payload is an object, each envelope key.
    pub fn parse(payload: &'a [u8]) -> Result<Self, DecodeError> {
        if let Err(e) = core::str::from_utf8(payload) {
            return Err(DecodeError::InvalidUtf8 {
                offset: u32::try_from(e.valid_up_to()).unwrap_or(u32::MAX),
            });
        }
        let f = Self::collect(payload).map_err(|e| syntax_error(payload).unwrap_or(e))?;
        let kind = f.kind.ok_or(invalid("type", EnvelopeProblem::Missing))?;
        let kind = plain_string(kind).ok_or(invalid("type", EnvelopeProblem::Invalid))?;
        let kind = Kind::from_raw(kind).ok_or(DecodeError::UnknownType)?;
        let name = f.name.ok_or(invalid("name", EnvelopeProblem::Missing))?;
        let name = plain_string(name)
            .filter(|n| valid_name(n))
            .ok_or(invalid("name", EnvelopeProblem::Invalid))?;
        let name =
            core::str::from_utf8(name).map_err(|_| invalid("name", EnvelopeProblem::Invalid))?;
        let id = Self::integer(f.id, "id")?;
        let reference = Self::integer(f.reference, "ref")?;
        let body = f.body.ok_or(invalid("body", EnvelopeProblem::Missing))?;
        if body.first() != Some(&b'{') {
            return Err(invalid("body", EnvelopeProblem::Invalid));
        }
        if kind == Kind::Command && id.is_none() {
            return Err(invalid("id", EnvelopeProblem::Missing));
        }
        if kind == Kind::Reply && reference.is_none() {
            return Err(invalid("ref", EnvelopeProblem::Missing));
        }
        Ok(Self {
            kind,
            name,
            id,
            reference,
            body,
        })
    }

    /// The fast path for the canonical form every conforming encoder writes: keys in the order
    /// `type`, `name`, `id`/`ref`, `body`, no whitespace. `None` means "not canonical, or
    /// something is off": the caller then uses [`parse`](Self::parse), which finds the precise
    /// error. The body is not checked here; its decoder parses it fully.
    fn parse_canonical(p: &'a [u8]) -> Option<Self> {
        let rest = p.strip_prefix(b"{\"type\":\"")?;
        let (kind, rest) = until_quote(rest)?;
        let kind = Kind::from_raw(kind)?;
        let rest = rest.strip_prefix(b",\"name\":\"")?;
        let (name, rest) = until_quote(rest)?;
        if !valid_name(name) {
            return None;
        }
        let (num, rest) = match kind {
            Kind::Command => number_after(rest.strip_prefix(b",\"id\":")?)?,
            _ => match rest.strip_prefix(b",\"ref\":") {
                Some(r) => number_after(r)?,
                None => (None, rest),
            },
        };
        if kind == Kind::Reply && num.is_none() {
            return None;
        }
        let body = rest.strip_prefix(b",\"body\":")?.strip_suffix(b"}")?;
        if body.first() != Some(&b'{') {
            return None;
        }
        let is_command = kind == Kind::Command;
        Some(Self {
            kind,
            name: core::str::from_utf8(name).ok()?,
            id: if is_command { num } else { None },
            reference: if is_command { None } else { num },
            body,
        })
    }

    fn collect(payload: &'a [u8]) -> Result<Fields<'a>, DecodeError> {
        let mut f = Fields::default();
        scan::walk_object(payload, b"body", |m| {
            let v = &payload[m.start..m.end];
            match m.key {
                b"type" => set(&mut f.kind, "type", v),
                b"name" => set(&mut f.name, "name", v),
                b"id" => set(&mut f.id, "id", v),
                b"ref" => set(&mut f.reference, "ref", v),
                b"body" => set(&mut f.body, "body", v),
                _ => Ok(()),
            }
        })?;
        Ok(f)
    }

    fn integer(raw: Option<&[u8]>, key: &'static str) -> Result<Option<u32>, DecodeError> {
        raw.map(|r| parse_u32(r).ok_or(invalid(key, EnvelopeProblem::Invalid)))
            .transpose()
    }

    /// The request id to put in `ref` when answering this envelope (its `id`).
    pub fn answer_ref(&self) -> Option<u32> {
        self.id
    }

    /// Decodes the body as `M`, checking that `type` and `name` are `M`'s.
    pub fn body_as<M>(&self) -> Result<M, DecodeError>
    where
        M: Message + for<'de> Deserialize<'de>,
    {
        if self.kind != M::KIND || self.name != M::NAME {
            return Err(DecodeError::UnknownMessage);
        }
        decode_body(self.body)
    }
}

/// Decodes a body with `serde-json-core`, decoding string escapes into a stack scratch buffer.
pub fn decode_body<M>(body: &[u8]) -> Result<M, DecodeError>
where
    M: for<'de> Deserialize<'de>,
{
    let mut scratch = [0u8; UNESCAPE_SCRATCH];
    match serde_json_core::from_slice_escaped::<M>(body, &mut scratch) {
        Ok((m, n)) if n == body.len() => Ok(m),
        Ok(_) => Err(DecodeError::InvalidField {
            problem: FieldProblem::Other,
        }),
        Err(e) => Err(syntax_error(body).unwrap_or(DecodeError::InvalidField {
            problem: field_problem(e),
        })),
    }
}

/// The precise syntax error in `json`, if it is not one well-formed JSON value. Only called on
/// error paths: the fast path checks the body once, while decoding it.
fn syntax_error(json: &[u8]) -> Option<DecodeError> {
    match scan::value_end(json, 0) {
        Err(e) => Some(e),
        Ok(end) => {
            let rest = json[end..].iter().position(|b| !b" \t\r\n".contains(b));
            rest.map(|k| DecodeError::InvalidJson {
                offset: u32::try_from(end + k).unwrap_or(u32::MAX),
            })
        }
    }
}

fn field_problem(e: serde_json_core::de::Error) -> FieldProblem {
    use serde_json_core::de::Error as E;
    match e {
        E::InvalidNumber => FieldProblem::NumberOutOfRange,
        E::InvalidType | E::ExpectedSomeIdent | E::ExpectedSomeValue => FieldProblem::WrongType,
        E::CustomError => FieldProblem::MissingOrUnknown,
        E::EscapedStringIsTooLong => FieldProblem::TooLong,
        _ => FieldProblem::Other,
    }
}

/// A command from a client, decoded and range-checked.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// `hello`.
    Hello(Hello),
    /// `ping`.
    Ping(Ping),
    /// `goodbye`.
    Goodbye,
    /// `transport.play`.
    Play,
    /// `transport.stop`.
    Stop,
    /// `transport.seek`.
    Seek(Seek),
    /// `transport.tempo`.
    Tempo(Tempo),
    /// `transport.loop`.
    Loop(Loop),
    /// `param.set`.
    ParamSet(ParamSet),
    /// `graph.add_node`.
    AddNode(AddNode),
    /// `graph.remove_node`.
    RemoveNode(RemoveNode),
    /// `graph.connect`.
    Connect(Edge),
    /// `graph.disconnect`.
    Disconnect(Edge),
    /// `engine.shutdown`.
    Shutdown,
    /// `telemetry.subscribe`.
    Subscribe(Subscribe),
    /// `telemetry.unsubscribe`.
    Unsubscribe(Unsubscribe),
}

/// A command that failed to decode, with the request id when it could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandError {
    /// The envelope's `id`, for the `ref` of the error answer.
    pub id: Option<u32>,
    /// What went wrong.
    pub error: DecodeError,
}

impl Command {
    /// Decodes a command from a frame payload: envelope, body by name, then ranges.
    pub fn decode(payload: &[u8]) -> Result<(u32, Command), CommandError> {
        if let Some(env) = Envelope::parse_canonical(payload) {
            if let Ok(cmd) = Self::from_envelope(&env) {
                return Ok((env.id.unwrap_or_default(), cmd));
            }
        }
        Self::decode_generic(payload)
    }

    /// [`decode`](Self::decode) without the canonical fast path: accepts any key order and
    /// whitespace, and finds the precise error. Public for differential tests.
    #[doc(hidden)]
    pub fn decode_generic(payload: &[u8]) -> Result<(u32, Command), CommandError> {
        let env = Envelope::parse(payload).map_err(|error| CommandError {
            // Invalid UTF-8 is a framing-layer fault: the payload is not read at all.
            id: match error {
                DecodeError::InvalidUtf8 { .. } => None,
                _ => id_of(payload),
            },
            error,
        })?;
        let id = env.id;
        Self::from_envelope(&env)
            .map_err(|error| CommandError { id, error })
            .map(|c| (id.unwrap_or_default(), c))
    }

    /// Decodes the body of a parsed envelope, which must be a `command`.
    pub fn from_envelope(env: &Envelope<'_>) -> Result<Command, DecodeError> {
        if env.kind != Kind::Command {
            return Err(DecodeError::UnexpectedType);
        }
        let b = env.body;
        let cmd = match env.name {
            "hello" => Command::Hello(decode_body(b)?),
            "ping" => Command::Ping(decode_body(b)?),
            "goodbye" => decode_body::<Goodbye>(b).map(|_| Command::Goodbye)?,
            "transport.play" => decode_body::<Play>(b).map(|_| Command::Play)?,
            "transport.stop" => decode_body::<Stop>(b).map(|_| Command::Stop)?,
            "transport.seek" => Command::Seek(decode_body(b)?),
            "transport.tempo" => Command::Tempo(decode_body(b)?),
            "transport.loop" => Command::Loop(decode_body(b)?),
            "param.set" => Command::ParamSet(decode_body(b)?),
            "graph.add_node" => Command::AddNode(decode_body(b)?),
            "graph.remove_node" => Command::RemoveNode(decode_body(b)?),
            "graph.connect" => Command::Connect(decode_body(b)?),
            "graph.disconnect" => Command::Disconnect(decode_body(b)?),
            "engine.shutdown" => decode_body::<Shutdown>(b).map(|_| Command::Shutdown)?,
            "telemetry.subscribe" => Command::Subscribe(decode_body(b)?),
            "telemetry.unsubscribe" => Command::Unsubscribe(decode_body(b)?),
            _ => return Err(DecodeError::UnknownMessage),
        };
        cmd.check_ranges()?;
        Ok(cmd)
    }

    /// Checks the documented value ranges that JSON types alone do not express.
    pub fn check_ranges(&self) -> Result<(), DecodeError> {
        let bad = |field| Err(DecodeError::OutOfRange { field });
        let unsafe_int = |v: u64| v > MAX_SAFE_INTEGER;
        match self {
            Command::Seek(s) if unsafe_int(s.sample) => bad("sample"),
            Command::Loop(l) if unsafe_int(l.start) => bad("start"),
            Command::Loop(l) if unsafe_int(l.end) => bad("end"),
            Command::Ping(p) if p.t_client_us.is_some_and(unsafe_int) => bad("t_client_us"),
            Command::Tempo(t) if !(20.0..=999.0).contains(&t.bpm) => bad("bpm"),
            Command::Loop(l) if l.enabled && l.end <= l.start => bad("end"),
            Command::ParamSet(p) if !p.value.is_finite() => bad("value"),
            Command::ParamSet(p) if p.ramp_ms.is_some_and(|r| !(0.0..=60_000.0).contains(&r)) => {
                bad("ramp_ms")
            }
            Command::Subscribe(s) if !(1..=120).contains(&s.rate_hz) => bad("rate_hz"),
            _ => Ok(()),
        }
    }

    /// The message name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hello(_) => Hello::NAME,
            Command::Ping(_) => Ping::NAME,
            Command::Goodbye => Goodbye::NAME,
            Command::Play => Play::NAME,
            Command::Stop => Stop::NAME,
            Command::Seek(_) => Seek::NAME,
            Command::Tempo(_) => Tempo::NAME,
            Command::Loop(_) => Loop::NAME,
            Command::ParamSet(_) => ParamSet::NAME,
            Command::AddNode(_) => AddNode::NAME,
            Command::RemoveNode(_) => RemoveNode::NAME,
            Command::Connect(_) => Connect::NAME,
            Command::Disconnect(_) => Disconnect::NAME,
            Command::Shutdown => Shutdown::NAME,
            Command::Subscribe(_) => Subscribe::NAME,
            Command::Unsubscribe(_) => Unsubscribe::NAME,
        }
    }
}

/// Best effort: the `id` of a command whose envelope is otherwise broken, so an error can still
/// carry `ref`. `None` unless the payload is a JSON object with `"type":"command"` and exactly
/// one `id` that is a u32.
fn id_of(payload: &[u8]) -> Option<u32> {
    let mut id = None;
    let mut seen = 0;
    let mut command = false;
    let walked = scan::walk_object(payload, b"", |m| {
        let v = &payload[m.start..m.end];
        match m.key {
            b"id" => {
                seen += 1;
                id = parse_u32(v);
            }
            b"type" => command = v == b"\"command\"",
            _ => {}
        }
        Ok(())
    });
    (walked.is_ok() && seen == 1 && command)
        .then_some(id)
        .flatten()
}

/// A message from the engine, decoded (what a client receives).
///
/// `Meters` makes the enum about 530 bytes; boxing it would need the heap this core forgoes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum ServerMessage {
    /// `reply welcome`.
    Welcome(Welcome),
    /// `reply pong`.
    Pong(Pong),
    /// `reply ack`.
    Ack(Ack),
    /// `error error`.
    Error(ErrorBody),
    /// `error log`.
    Log(Log),
    /// `error goodbye`.
    Goodbye(GoodbyeNotice),
    /// `telemetry transport.state`.
    Transport(TransportState),
    /// `telemetry meters`.
    Meters(Meters),
    /// `telemetry engine.health`.
    Health(Health),
}

impl ServerMessage {
    /// Decodes an engine message from a frame payload; returns it with its `ref`.
    ///
    /// Unknown body fields are ignored, as the spec asks of clients.
    pub fn decode(payload: &[u8]) -> Result<(Option<u32>, ServerMessage), DecodeError> {
        if let Some(env) = Envelope::parse_canonical(payload) {
            if let Ok(msg) = Self::from_envelope(&env) {
                return Ok((env.reference, msg));
            }
        }
        Self::decode_generic(payload)
    }

    /// [`decode`](Self::decode) without the canonical fast path. Public for differential tests.
    #[doc(hidden)]
    pub fn decode_generic(payload: &[u8]) -> Result<(Option<u32>, ServerMessage), DecodeError> {
        let env = Envelope::parse(payload)?;
        Ok((env.reference, Self::from_envelope(&env)?))
    }

    /// Decodes the body of a parsed envelope sent by an engine.
    pub fn from_envelope(env: &Envelope<'_>) -> Result<ServerMessage, DecodeError> {
        let b = env.body;
        let msg = match (env.kind, env.name) {
            (Kind::Reply, "welcome") => ServerMessage::Welcome(decode_body(b)?),
            (Kind::Reply, "pong") => ServerMessage::Pong(decode_body(b)?),
            (Kind::Reply, "ack") => ServerMessage::Ack(decode_body(b)?),
            (Kind::Error, "error") => ServerMessage::Error(decode_body(b)?),
            (Kind::Error, "log") => ServerMessage::Log(decode_body(b)?),
            (Kind::Error, "goodbye") => ServerMessage::Goodbye(decode_body(b)?),
            (Kind::Telemetry, "transport.state") => ServerMessage::Transport(decode_body(b)?),
            (Kind::Telemetry, "meters") => ServerMessage::Meters(decode_body(b)?),
            (Kind::Telemetry, "engine.health") => ServerMessage::Health(decode_body(b)?),
            (Kind::Command, _) => return Err(DecodeError::UnexpectedType),
            _ => return Err(DecodeError::UnknownMessage),
        };
        Ok(msg)
    }
}

/// A cursor writing bytes into a slice.
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let dst = self
            .buf
            .get_mut(self.at..self.at + bytes.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.at += bytes.len();
        Ok(())
    }

    fn put_u32(&mut self, v: u32) -> Result<(), EncodeError> {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

/// Writes the JSON envelope of `body` into `out` (no frame header); returns the bytes written.
///
/// `id_or_ref` becomes `id` for commands and `ref` for the other types (omitted when `None`).
/// Key order is canonical: `type`, `name`, `id`/`ref`, `body`.
pub fn encode_payload<M: Message>(
    id_or_ref: Option<u32>,
    body: &M,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut o = Out { buf: out, at: 0 };
    o.put(b"{\"type\":\"")?;
    o.put(M::KIND.as_str().as_bytes())?;
    o.put(b"\",\"name\":\"")?;
    o.put(M::NAME.as_bytes())?;
    if let Some(v) = id_or_ref {
        o.put(if M::KIND == Kind::Command {
            b"\",\"id\":"
        } else {
            b"\",\"ref\":"
        })?;
        o.put_u32(v)?;
        o.put(b",\"body\":")?;
    } else {
        o.put(b"\",\"body\":")?;
    }
    let rest = o.buf.get_mut(o.at..).ok_or(EncodeError::BufferTooSmall)?;
    let n = serde_json_core::to_slice(body, rest).map_err(|_| EncodeError::BufferTooSmall)?;
    o.at += n;
    o.put(b"}")?;
    Ok(o.at)
}

/// Writes one complete frame (header + JSON envelope) into `out`; returns the bytes written.
///
/// `max_frame` is the peer's payload limit ([`frame::DEFAULT_MAX_FRAME`] for the engine).
pub fn encode_frame<M: Message>(
    id_or_ref: Option<u32>,
    body: &M,
    out: &mut [u8],
    max_frame: u32,
) -> Result<usize, EncodeError> {
    frame::write_frame(out, max_frame, |payload| {
        encode_payload(id_or_ref, body, payload)
    })
}

/// Builds an `error` body from a code and a formatted message, truncating the text to fit.
pub fn error_body(code: ErrorCode, message: core::fmt::Arguments<'_>) -> ErrorBody {
    let mut text = heapless::String::<MAX_TEXT>::new();
    let _ = Truncating(&mut text).write_fmt(message);
    let mut c = heapless::String::<MAX_CODE>::new();
    let _ = c.push_str(code.as_str());
    ErrorBody {
        code: c,
        message: text,
    }
}

/// A `fmt::Write` that keeps what fits and drops the rest (at a char boundary), never failing.
struct Truncating<'a, const N: usize>(&'a mut heapless::String<N>);

impl<const N: usize> core::fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for ch in s.chars() {
            if self.0.push(ch).is_err() {
                break;
            }
        }
        Ok(())
    }
}

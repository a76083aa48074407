//! The envelope and the typed message catalogue (normative text: `docs/specs/ipc/envelope.md`).
//!
//! Decoding is two steps, because serde's tagged enums need an allocator: [`Envelope::parse`]
//! reads `type`, `name`, `id`, `ref` and the byte range of `body` (keys in any order), then the
//! body is decoded by name with `serde-json-core` into a fixed-size type. Encoding writes the
//! envelope around a body serialized straight into the caller's buffer. Nothing allocates.

pub mod analysis;
mod catalogue;
mod fields;
pub mod scan;

pub use analysis::{
    AnalysisKey, AnalysisMeta, AnalysisStream, AnalysisValues, Scope, Spectrum, SubscribeAnalysis,
    UnsubscribeAnalysis, MAX_ANALYSIS_SUBS,
};
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
    /// The raw JSON value of the top-level `attachment` member, on engine messages that have
    /// one (framing.md §3.1). Never read on commands (ignored like an unknown key).
    pub attachment: Option<&'a [u8]>,
}

/// What [`Envelope::parse`] collects before it checks: the raw value of each envelope key (the
/// last one when a key repeats) and the first key seen twice.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    reference: Option<&'a [u8]>,
    body: Option<&'a [u8]>,
    attachment: Option<&'a [u8]>,
    attachment_dup: bool,
    duplicate: Option<&'static str>,
}

fn note<'a>(
    slot: &mut Option<&'a [u8]>,
    duplicate: &mut Option<&'static str>,
    key: &'static str,
    v: &'a [u8],
) {
    if slot.replace(v).is_some() && duplicate.is_none() {
        *duplicate = Some(key);
    }
}

const fn invalid(key: &'static str, problem: EnvelopeProblem) -> DecodeError {
    DecodeError::InvalidEnvelope { key, problem }
}

/// Every message name of protocol version 1, both directions. A `name` written with escapes is
/// decoded and looked up here (the envelope borrows its name, and a decoded name has nowhere
/// else to live); one not listed is `unknown_message`.
const NAMES: [&str; 26] = [
    "hello",
    "welcome",
    "ping",
    "pong",
    "goodbye",
    "transport.play",
    "transport.stop",
    "transport.seek",
    "transport.tempo",
    "transport.loop",
    "transport.state",
    "param.set",
    "graph.add_node",
    "graph.remove_node",
    "graph.connect",
    "graph.disconnect",
    "engine.shutdown",
    "telemetry.subscribe",
    "telemetry.unsubscribe",
    "meters",
    "engine.health",
    "scope",
    "spectrum",
    "ack",
    "error",
    "log",
];

/// Decodes the JSON escapes of a string's raw contents (already checked by [`scan`], which
/// refuses surrogate escapes) into `out`; `None` when `out` is too small.
pub(crate) fn unescape<'b>(inner: &[u8], out: &'b mut [u8]) -> Option<&'b [u8]> {
    let (mut i, mut n) = (0, 0);
    while i < inner.len() {
        let mut utf8 = [0u8; 4];
        let (bytes, step): (&[u8], usize) = match inner[i] {
            b'\\' => match *inner.get(i + 1)? {
                b'u' => {
                    let hex = core::str::from_utf8(inner.get(i + 2..i + 6)?).ok()?;
                    let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                    (c.encode_utf8(&mut utf8).as_bytes(), 6)
                }
                e => {
                    utf8[0] = match e {
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other, // `"`, `\\`, `/`
                    };
                    (&utf8[..1], 2)
                }
            },
            b => {
                utf8[0] = b;
                (&utf8[..1], 1)
            }
        };
        out.get_mut(n..n + bytes.len())?.copy_from_slice(bytes);
        n += bytes.len();
        i += step;
    }
    Some(&out[..n])
}

/// A JSON string value decoded into `buf`: `Err` when `raw` is not a string, `Ok(None)` when it
/// does not fit.
fn decoded<'b>(raw: &'b [u8], buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, ()> {
    let inner = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .ok_or(())?;
    if inner.contains(&b'\\') {
        Ok(unescape(inner, buf))
    } else {
        Ok(Some(inner))
    }
}

/// A JSON integer of at most `max_digits` (≤ 19) digits, written without sign, fraction,
/// exponent or leading zero.
pub(crate) fn parse_uint(raw: &[u8], max_digits: usize) -> Option<u64> {
    if raw.is_empty() || raw.len() > max_digits.min(19) || (raw.len() > 1 && raw[0] == b'0') {
        return None;
    }
    raw.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// A JSON integer in 0..=u32::MAX, written without sign, fraction or exponent.
fn parse_u32(raw: &[u8]) -> Option<u32> {
    parse_uint(raw, 10).and_then(|v| u32::try_from(v).ok())
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
    /// Parses a JSON payload's envelope. The body is checked as JSON and located, not decoded.
    ///
    /// Checks, in order (errors.md §2): UTF-8, the whole payload's JSON syntax (so a syntax
    /// error anywhere, in `body` too, is `InvalidJson`), that it is an object, then each envelope
    /// key. Escapes are decoded in keys, `type` and `name`. `id` is read on commands only, `ref`
    /// on the other types; elsewhere they are ignored like unknown keys.
    pub fn parse(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_as(payload, false).map_err(|e| e.error)
    }

    /// [`parse`](Self::parse); with `commands`, a known `type` other than `command` is
    /// `UnexpectedType` before anything else is checked (a client sends only commands). The error
    /// carries the id when the payload is a command whose `id` is readable.
    fn parse_as(payload: &'a [u8], commands: bool) -> Result<Self, CommandError> {
        let reject = |error, id| CommandError {
            id,
            error,
            hello: None,
        };
        if let Err(e) = core::str::from_utf8(payload) {
            let offset = u32::try_from(e.valid_up_to()).unwrap_or(u32::MAX);
            return Err(reject(DecodeError::InvalidUtf8 { offset }, None));
        }
        let f = Self::collect(payload).map_err(|e| reject(e, None))?;
        let kind = Self::kind(&f).map_err(|e| reject(e, None))?;
        if commands && kind != Kind::Command {
            return Err(reject(DecodeError::UnexpectedType, None));
        }
        let is_command = kind == Kind::Command;
        let id = f.id.filter(|_| is_command).and_then(parse_u32);
        let id = id.filter(|_| f.duplicate != Some("id"));
        let fail = |error| reject(error, id);
        if let Some(key) = f.duplicate {
            return Err(fail(invalid(key, EnvelopeProblem::Duplicate)));
        }
        let raw_name = f
            .name
            .ok_or(fail(invalid("name", EnvelopeProblem::Missing)))?;
        let name = Self::name(raw_name).ok_or(fail(invalid("name", EnvelopeProblem::Invalid)))?;
        let reference = match f.reference.filter(|_| !is_command) {
            Some(r) => Some(parse_u32(r).ok_or(fail(invalid("ref", EnvelopeProblem::Invalid)))?),
            None => None,
        };
        let body = f
            .body
            .ok_or(fail(invalid("body", EnvelopeProblem::Missing)))?;
        if body.first() != Some(&b'{') {
            return Err(fail(invalid("body", EnvelopeProblem::Invalid)));
        }
        match (is_command, f.id, id) {
            (true, None, _) => return Err(fail(invalid("id", EnvelopeProblem::Missing))),
            (true, Some(_), None) => return Err(fail(invalid("id", EnvelopeProblem::Invalid))),
            _ => {}
        }
        if kind == Kind::Reply && reference.is_none() {
            return Err(fail(invalid("ref", EnvelopeProblem::Missing)));
        }
        let attachment = f.attachment.filter(|_| !is_command);
        if attachment.is_some() && f.attachment_dup {
            return Err(fail(invalid("attachment", EnvelopeProblem::Duplicate)));
        }
        let Some(name) = name else {
            // Escaped, well-formed, and not a name of this version.
            return Err(CommandError {
                hello: Some(false),
                ..fail(DecodeError::UnknownMessage)
            });
        };
        Ok(Self {
            kind,
            name,
            id,
            reference,
            body,
            attachment,
        })
    }

    fn kind(f: &Fields<'a>) -> Result<Kind, DecodeError> {
        if f.duplicate == Some("type") {
            return Err(invalid("type", EnvelopeProblem::Duplicate));
        }
        let raw = f.kind.ok_or(invalid("type", EnvelopeProblem::Missing))?;
        let mut buf = [0u8; 16];
        match decoded(raw, &mut buf) {
            Err(()) => Err(invalid("type", EnvelopeProblem::Invalid)),
            Ok(kind) => kind
                .and_then(Kind::from_raw)
                .ok_or(DecodeError::UnknownType),
        }
    }

    /// `name`: `None` when it is not a valid name; `Some(None)` when it is valid, written with
    /// escapes, and not a name of this version.
    fn name(raw: &'a [u8]) -> Option<Option<&'a str>> {
        let plain = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if !plain.contains(&b'\\') {
            return valid_name(plain).then(|| core::str::from_utf8(plain).ok());
        }
        let mut buf = [0u8; 32];
        let name = decoded(raw, &mut buf)
            .ok()
            .flatten()
            .filter(|n| valid_name(n))?;
        Some(NAMES.iter().copied().find(|k| k.as_bytes() == name))
    }

    /// The fast path for the canonical form every conforming encoder writes: keys in the order
    /// `type`, `name`, `id`/`ref`, `body`, no whitespace. `None` means "not canonical, or
    /// something is off": the caller then uses [`parse`](Self::parse), which finds the precise
    /// error.
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
        let (attachment, rest) = match rest.strip_prefix(b",\"attachment\":") {
            Some(r) if kind != Kind::Command => {
                let end = scan::value_end(r, 0).ok()?;
                (Some(&r[..end]), &r[end..])
            }
            Some(_) => return None,
            None => (None, rest),
        };
        let body = rest.strip_prefix(b",\"body\":")?.strip_suffix(b"}")?;
        // The body decoder is more lenient than JSON (raw control bytes in strings, some number
        // forms), so the grammar is checked here; one fast pass, without the envelope's keys.
        if body.first() != Some(&b'{') || scan::value_end(body, 0).ok()? != body.len() {
            return None;
        }
        let is_command = kind == Kind::Command;
        Some(Self {
            kind,
            name: core::str::from_utf8(name).ok()?,
            id: if is_command { num } else { None },
            reference: if is_command { None } else { num },
            body,
            attachment,
        })
    }

    fn collect(payload: &'a [u8]) -> Result<Fields<'a>, DecodeError> {
        let mut f = Fields::default();
        scan::walk_object(payload, None, |m| {
            let v = &payload[m.start..m.end];
            let mut buf = [0u8; 8];
            let key = if m.key.contains(&b'\\') {
                unescape(m.key, &mut buf).unwrap_or_default()
            } else {
                m.key
            };
            let d = &mut f.duplicate;
            match key {
                b"type" => note(&mut f.kind, d, "type", v),
                b"name" => note(&mut f.name, d, "name", v),
                b"id" => note(&mut f.id, d, "id", v),
                b"ref" => note(&mut f.reference, d, "ref", v),
                b"body" => note(&mut f.body, d, "body", v),
                b"attachment" => {
                    f.attachment_dup |= f.attachment.replace(v).is_some();
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(f)
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
    /// `telemetry.subscribe` of `scope` or `spectrum`.
    SubscribeAnalysis(SubscribeAnalysis),
    /// `telemetry.unsubscribe` of `scope` or `spectrum`.
    UnsubscribeAnalysis(UnsubscribeAnalysis),
}

/// A command that failed to decode, with the request id when it could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandError {
    /// The envelope's `id`, for the `ref` of the error answer.
    pub id: Option<u32>,
    /// What went wrong.
    pub error: DecodeError,
    /// `Some(name == "hello")` when the envelope was a valid command envelope and the fault is
    /// in its name or body (errors.md §2 steps 9-10); `None` when the envelope itself failed. A
    /// session uses it to put its own state checks (step 8) first.
    pub hello: Option<bool>,
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
        let env = Envelope::parse_as(payload, true)?;
        let id = env.id;
        let hello = Some(env.name == Hello::NAME);
        Self::from_envelope(&env)
            .map_err(|error| CommandError { id, error, hello })
            .map(|c| (id.unwrap_or_default(), c))
    }

    /// Decodes the body of a parsed envelope, which must be a `command`.
    pub fn from_envelope(env: &Envelope<'_>) -> Result<Command, DecodeError> {
        if env.kind != Kind::Command {
            return Err(DecodeError::UnexpectedType);
        }
        match Self::decode_named(env.name, env.body) {
            // errors.md §2: `invalid_field` before `out_of_range` when a body has both faults;
            // and the field table names an `invalid_field`'s problem more precisely than the
            // body decoder (a 65-byte `client` is "too long", not "missing or unknown").
            Err(e) if matches!(e.code(), ErrorCode::OutOfRange | ErrorCode::InvalidField) => {
                Err(fields::invalid_field(env.name, env.body).unwrap_or(e))
            }
            r => r,
        }
    }

    fn decode_named(name: &str, b: &[u8]) -> Result<Command, DecodeError> {
        let cmd = match name {
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
            "telemetry.subscribe" => decode_body::<analysis::SubscribeWire>(b)?.into_command()?,
            "telemetry.unsubscribe" => {
                decode_body::<analysis::UnsubscribeWire>(b)?.into_command()?
            }
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
            Command::SubscribeAnalysis(s)
                if !(1..=analysis::MAX_ANALYSIS_RATE_HZ).contains(&s.rate_hz) =>
            {
                bad("rate_hz")
            }
            Command::SubscribeAnalysis(s) if !s.stream.size_ok(s.size) => {
                bad(s.stream.size_field())
            }
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
            Command::SubscribeAnalysis(_) => SubscribeAnalysis::NAME,
            Command::UnsubscribeAnalysis(_) => UnsubscribeAnalysis::NAME,
        }
    }
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
    /// `telemetry scope` or `spectrum`: the scalar fields. The values are in the frame; read
    /// them with [`ServerMessage::decode_frame`].
    Analysis(AnalysisMeta),
}

/// One engine frame decoded by [`ServerMessage::decode_frame`].
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming<'a> {
    /// The `ref`, if any.
    pub reference: Option<u32>,
    /// The message.
    pub message: ServerMessage,
    /// For [`ServerMessage::Analysis`]: the values, borrowed from the frame.
    pub values: Option<AnalysisValues<'a>>,
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

    /// Decodes one engine frame, with or without an attachment (framing.md §3.1), checking
    /// the envelope's `attachment` member against the frame: present exactly when the frame
    /// has the flag, `format` `"f32le"`, `bytes` equal to the attachment's length, and only on
    /// `scope`/`spectrum`. A mismatch is [`DecodeError::InvalidEnvelope`] (key `attachment`): a
    /// protocol error, the client closes. Borrows the frame; allocates nothing.
    pub fn decode_frame<'a>(frame: &crate::frame::Frame<'a>) -> Result<Incoming<'a>, DecodeError> {
        // The padding is JSON whitespace; the fast path wants the object's last byte last.
        let json = match frame.attachment {
            Some(_) => trim_spaces(frame.json),
            None => frame.json,
        };
        if let Some(env) = Envelope::parse_canonical(json) {
            if let Ok(inc) = Self::from_frame_envelope(frame, &env) {
                return Ok(inc);
            }
        }
        Self::decode_frame_generic(frame)
    }

    /// [`decode_frame`](Self::decode_frame) without the canonical fast path. Public for
    /// differential tests.
    #[doc(hidden)]
    pub fn decode_frame_generic<'a>(
        frame: &crate::frame::Frame<'a>,
    ) -> Result<Incoming<'a>, DecodeError> {
        let env = Envelope::parse(frame.json)?;
        Self::from_frame_envelope(frame, &env)
    }

    fn from_frame_envelope<'a>(
        frame: &crate::frame::Frame<'a>,
        env: &Envelope<'a>,
    ) -> Result<Incoming<'a>, DecodeError> {
        let bad = invalid("attachment", EnvelopeProblem::Invalid);
        if env.kind == Kind::Command {
            return Err(DecodeError::UnexpectedType);
        }
        match (frame.attachment, env.attachment) {
            (None, None) => {}
            (Some(att), Some(desc)) if attachment_bytes(desc) == Some(att.len()) => {}
            _ => return Err(bad),
        }
        let stream = match (env.kind, env.name) {
            (Kind::Telemetry, "scope") => Some(AnalysisStream::Scope),
            (Kind::Telemetry, "spectrum") => Some(AnalysisStream::Spectrum),
            _ => None,
        };
        match stream {
            Some(stream) => {
                let (meta, values) = analysis::decode_analysis(stream, env.body, frame.attachment)?;
                Ok(Incoming {
                    reference: env.reference,
                    message: ServerMessage::Analysis(meta),
                    values: Some(values),
                })
            }
            None if frame.attachment.is_some() => Err(bad),
            None => Ok(Incoming {
                reference: env.reference,
                message: Self::from_envelope(env)?,
                values: None,
            }),
        }
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
            (Kind::Telemetry, "scope") => ServerMessage::Analysis(
                analysis::decode_analysis(AnalysisStream::Scope, b, None)?.0,
            ),
            (Kind::Telemetry, "spectrum") => ServerMessage::Analysis(
                analysis::decode_analysis(AnalysisStream::Spectrum, b, None)?.0,
            ),
            (Kind::Command, _) => return Err(DecodeError::UnexpectedType),
            _ => return Err(DecodeError::UnknownMessage),
        };
        Ok(msg)
    }
}

/// `payload` without trailing spaces.
fn trim_spaces(payload: &[u8]) -> &[u8] {
    let end = payload
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(0, |e| e + 1);
    &payload[..end]
}

/// `bytes` of an `attachment` member `{"format":"f32le","bytes":M}` (other keys ignored);
/// `None` when it is not one.
fn attachment_bytes(desc: &[u8]) -> Option<usize> {
    let (mut format, mut bytes) = (false, None);
    scan::walk_object(desc, None, |m| {
        match m.key {
            b"format" => format = &desc[m.start..m.end] == b"\"f32le\"",
            b"bytes" => bytes = parse_u32(&desc[m.start..m.end]),
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    bytes.filter(|_| format).map(|b| b as usize)
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
    encode_envelope(id_or_ref, None, body, out)
}

/// The envelope, with `"attachment":{"format":"f32le","bytes":N}` after `name` when
/// `attachment` is `Some(N)`.
fn encode_envelope<M: Message>(
    id_or_ref: Option<u32>,
    attachment: Option<u32>,
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
    } else {
        o.put(b"\"")?;
    }
    if let Some(n) = attachment {
        o.put(b",\"attachment\":{\"format\":\"f32le\",\"bytes\":")?;
        o.put_u32(n)?;
        o.put(b"}")?;
    }
    o.put(b",\"body\":")?;
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

/// Writes one frame with an attachment: the envelope of `body` (which must leave its arrays
/// out, e.g. [`Scope`] with `values: None`) with its `attachment` member, space-padded to a
/// multiple of 8, then `values` as `f32` little-endian (non-finite ones as
/// [`analysis::NON_FINITE`], as in the JSON form). Allocates nothing.
pub fn encode_frame_with_attachment<M: Message>(
    id_or_ref: Option<u32>,
    body: &M,
    values: &[f32],
    out: &mut [u8],
    max_frame: u32,
) -> Result<usize, EncodeError> {
    let bytes = u32::try_from(values.len() * 4).map_err(|_| EncodeError::FrameTooLarge)?;
    frame::write_frame_with_attachment(out, max_frame, values, analysis::finite, |json| {
        encode_envelope(id_or_ref, Some(bytes), body, json)
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

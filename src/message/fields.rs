//! The JSON type of every command body field, for the one decision serde cannot make: whether a
//! body that failed a range check also has a field of the wrong JSON type (errors.md §2: when
//! both apply, `invalid_field` is reported). Only called on the error path; never allocates.
//!
//! The body decoder stops at its first fault and reads a float field's `null`, `"0.5"` or `true`
//! as a number that does not parse (or as NaN); this table lets the engine tell "wrong type"
//! (`invalid_field`) from "right type, outside its range" (`out_of_range`).

use super::{scan, unescape};
use crate::error::{DecodeError, FieldProblem};

/// The JSON type a field must have.
#[derive(Clone, Copy)]
enum Ty {
    /// A JSON number without fraction or exponent (sign allowed: a negative integer is a range
    /// fault, not a type fault).
    Int,
    /// Any JSON number.
    Float,
    /// `true` or `false`.
    Bool,
    /// A string of at most this many bytes once decoded.
    Str(usize),
    /// A string, one of these.
    Enum(&'static [&'static str]),
}

/// One body field.
struct Field {
    key: &'static str,
    ty: Ty,
    required: bool,
}

const fn req(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: true,
    }
}

const fn opt(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: false,
    }
}

use super::catalogue::{MAX_CLIENT_NAME, MAX_NODE_KIND, MAX_TOKEN};
use Ty::{Bool, Enum, Float, Int, Str};

const STREAMS: &[&str] = &[
    "meters",
    "transport.state",
    "engine.health",
    "scope",
    "spectrum",
];
const HELLO: &[Field] = &[
    req("protocol", Int),
    req("client", Str(MAX_CLIENT_NAME)),
    opt("token", Str(MAX_TOKEN)),
    opt("attachments", Bool),
];
const PING: &[Field] = &[req("nonce", Int), opt("t_client_us", Int), opt("rt", Bool)];
const SEEK: &[Field] = &[req("sample", Int)];
const TEMPO: &[Field] = &[req("bpm", Float)];
const LOOP: &[Field] = &[req("start", Int), req("end", Int), req("enabled", Bool)];
const PARAM_SET: &[Field] = &[
    req("node", Int),
    req("param", Int),
    req("value", Float),
    opt("ramp_ms", Float),
];
const ADD_NODE: &[Field] = &[req("node", Int), req("kind", Str(MAX_NODE_KIND))];
const NODE: &[Field] = &[req("node", Int)];
const EDGE: &[Field] = &[
    req("from", Int),
    req("from_port", Int),
    req("to", Int),
    req("to_port", Int),
];
// `tap`, `points`, `bins`: which of them a stream takes is [`per_stream`]'s rule.
const SUBSCRIBE: &[Field] = &[
    req("stream", Enum(STREAMS)),
    req("rate_hz", Int),
    opt("tap", Int),
    opt("points", Int),
    opt("bins", Int),
];
const UNSUBSCRIBE: &[Field] = &[req("stream", Enum(STREAMS)), opt("tap", Int)];

/// envelope.md "Analysis streams": the fields `tap` (bit 2), `points` (bit 3) and `bins`
/// (bit 4) a subscribe (or, `tap` only, unsubscribe) body of stream `stream` must have.
/// True when `seen` (bits of the table's fields) fits.
fn per_stream(name: &str, stream: &[u8], seen: u32) -> bool {
    let extra = seen & 0b11100;
    match (name, stream) {
        ("telemetry.subscribe", b"scope") => extra == 0b01100,
        ("telemetry.subscribe", b"spectrum") => extra == 0b10100,
        ("telemetry.unsubscribe", b"scope" | b"spectrum") => true,
        ("telemetry.subscribe" | "telemetry.unsubscribe", _) => extra == 0,
        _ => true,
    }
}

/// The fields of a command body (envelope.md's catalogue), or `None` for an unknown name.
fn fields_of(name: &str) -> Option<&'static [Field]> {
    Some(match name {
        "hello" => HELLO,
        "ping" => PING,
        "goodbye" | "transport.play" | "transport.stop" | "engine.shutdown" => &[],
        "transport.seek" => SEEK,
        "transport.tempo" => TEMPO,
        "transport.loop" => LOOP,
        "param.set" => PARAM_SET,
        "graph.add_node" => ADD_NODE,
        "graph.remove_node" => NODE,
        "graph.connect" | "graph.disconnect" => EDGE,
        "telemetry.subscribe" => SUBSCRIBE,
        "telemetry.unsubscribe" => UNSUBSCRIBE,
        _ => return None,
    })
}

/// What is wrong with raw JSON value `v` for type `ty`, if anything.
fn misfit(ty: Ty, v: &[u8]) -> Option<FieldProblem> {
    let ok = match ty {
        Ty::Int => {
            let digits = v.strip_prefix(b"-").unwrap_or(v);
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        }
        Ty::Float => matches!(v.first(), Some(b'-' | b'0'..=b'9')),
        Ty::Bool => v == b"true" || v == b"false",
        Ty::Str(max) => {
            let Some(inner) = string_inner(v) else {
                return Some(FieldProblem::WrongType);
            };
            let mut buf = [0u8; super::UNESCAPE_SCRATCH];
            return match unescape(inner, &mut buf) {
                Some(s) if s.len() <= max => None,
                _ => Some(FieldProblem::TooLong),
            };
        }
        Ty::Enum(names) => {
            let Some(inner) = string_inner(v) else {
                return Some(FieldProblem::WrongType);
            };
            let mut buf = [0u8; 32];
            return match unescape(inner, &mut buf) {
                Some(s) if names.iter().any(|n| n.as_bytes() == s) => None,
                _ => Some(FieldProblem::Other),
            };
        }
    };
    (!ok).then_some(FieldProblem::WrongType)
}

/// The raw bytes between the quotes of a JSON string value.
fn string_inner(v: &[u8]) -> Option<&[u8]> {
    v.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// The `invalid_field` fault of command `name`'s body, if it has one: an unknown, repeated or
/// missing field, or a field of the wrong JSON type, too long, or outside its enumeration.
/// `body` has passed the JSON check. `None` for a name this table does not know.
pub(super) fn invalid_field(name: &str, body: &[u8]) -> Option<DecodeError> {
    let table = fields_of(name)?;
    let mut seen = 0u32;
    let mut fault = None;
    let mut stream: &[u8] = b"";
    let walked = scan::walk_object(body, None, |m| {
        if fault.is_some() {
            return Ok(());
        }
        let mut kb = [0u8; 32];
        let key = if m.key.contains(&b'\\') {
            unescape(m.key, &mut kb).unwrap_or_default()
        } else {
            m.key
        };
        fault = match table.iter().position(|f| f.key.as_bytes() == key) {
            Some(i) if seen & (1 << i) == 0 => {
                seen |= 1 << i;
                if table[i].key == "stream" {
                    stream = string_inner(&body[m.start..m.end]).unwrap_or_default();
                }
                misfit(table[i].ty, &body[m.start..m.end])
            }
            _ => Some(FieldProblem::MissingOrUnknown),
        };
        Ok(())
    });
    if walked.is_err() {
        return Some(DecodeError::InvalidField {
            problem: FieldProblem::Other,
        });
    }
    let missing = || {
        table
            .iter()
            .enumerate()
            .any(|(i, f)| f.required && seen & (1 << i) == 0)
    };
    let mut sb = [0u8; 32];
    let stream = if stream.contains(&b'\\') {
        unescape(stream, &mut sb).unwrap_or_default()
    } else {
        stream
    };
    if fault.is_none() && (missing() || !per_stream(name, stream, seen)) {
        fault = Some(FieldProblem::MissingOrUnknown);
    }
    fault.map(|problem| DecodeError::InvalidField { problem })
}

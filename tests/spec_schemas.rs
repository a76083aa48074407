//! Consistency of the wire specification in `docs/specs/ipc/`: the JSON Schemas, the golden
//! vectors and the error-code table must agree with each other and with the framing rules.
//!
//! This test reads only the documents; the codec is tested against the same vectors elsewhere.
//! Every check here has a negative control: the schema checker must reject a broken schema, and
//! the negative vectors must be rejected by the schemas (or carry the defect they claim).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

#[path = "common/mod.rs"]
mod common;

/// Every message of protocol version 1, as `<type>.<name>` (envelope.md's catalogue).
const CATALOGUE: [&str; 27] = [
    "command.hello",
    "reply.welcome",
    "command.ping",
    "reply.pong",
    "command.goodbye",
    "error.goodbye",
    "command.transport.play",
    "command.transport.stop",
    "command.transport.seek",
    "command.transport.tempo",
    "command.transport.loop",
    "telemetry.transport.state",
    "command.param.set",
    "command.graph.add_node",
    "command.graph.remove_node",
    "command.graph.connect",
    "command.graph.disconnect",
    "command.engine.shutdown",
    "command.telemetry.subscribe",
    "command.telemetry.unsubscribe",
    "telemetry.meters",
    "telemetry.engine.health",
    "telemetry.scope",
    "telemetry.spectrum",
    "reply.ack",
    "error.error",
    "error.log",
];

const PREFACE: [u8; 8] = [0x89, 0x4C, 0x50, 0x48, 0x0D, 0x0A, 0x1A, 0x0A];
const HEADER_LEN: usize = 8;
const MAX_FRAME: u32 = 65_536;
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/specs/ipc")
}

fn read_json(path: &std::path::Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `*.schema.json`, keyed by file name without `.schema.json` (`command.param.set`).
fn schemas() -> BTreeMap<String, Value> {
    let dir = spec_dir().join("schemas");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).expect("schemas/ exists") {
        let path = entry.expect("dir entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(key) = file.strip_suffix(".schema.json") {
            out.insert(key.to_owned(), read_json(&path));
        }
    }
    out
}

fn vectors() -> Vec<Value> {
    match read_json(&spec_dir().join("vectors/vectors.json")) {
        Value::Array(v) => v,
        other => panic!("vectors.json is not an array: {other}"),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("vector {} has no `{key}`", v["name"]))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    field(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("vector {}: `{key}` is not a string", v["name"]))
}

fn hex(v: &Value) -> Vec<u8> {
    let s = text(v, "hex");
    assert!(
        s.len().is_multiple_of(2)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "vector {}: hex must be lowercase pairs",
        v["name"]
    );
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[derive(Debug)]
struct Header {
    len: u32,
    encoding: u8,
    flags: u8,
    reserved: u16,
}

fn header(b: &[u8]) -> Header {
    assert!(b.len() >= HEADER_LEN, "fewer than 8 header bytes");
    Header {
        len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        encoding: b[4],
        flags: b[5],
        reserved: u16::from_be_bytes([b[6], b[7]]),
    }
}

/// Cuts complete frames off `bytes`; panics on a partial frame.
fn frames(mut bytes: &[u8]) -> Vec<(Header, &[u8])> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = header(bytes);
        let end = HEADER_LEN + h.len as usize;
        assert!(bytes.len() >= end, "partial frame: {h:?}");
        out.push((h, &bytes[HEADER_LEN..end]));
        bytes = &bytes[end..];
    }
    out
}

/// The envelopes a positive vector carries: one for a frame, several for a stream.
fn envelopes(v: &Value) -> Vec<&Value> {
    match text(v, "kind") {
        "frame" => vec![field(v, "json")],
        "stream" => field(v, "json").as_array().unwrap().iter().collect(),
        _ => Vec::new(),
    }
}

fn message_key(env: &Value) -> Option<String> {
    Some(format!(
        "{}.{}",
        env.get("type")?.as_str()?,
        env.get("name")?.as_str()?
    ))
}

struct Validators {
    envelope: jsonschema::Validator,
    messages: BTreeMap<String, jsonschema::Validator>,
}

impl Validators {
    fn new() -> Self {
        let mut messages = BTreeMap::new();
        let mut envelope = None;
        for (key, schema) in schemas() {
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("schema {key} does not compile: {e}"));
            if key == "envelope" {
                envelope = Some(validator);
            } else {
                messages.insert(key, validator);
            }
        }
        Self {
            envelope: envelope.expect("envelope.schema.json"),
            messages,
        }
    }

    /// Valid against the generic envelope and against the schema of its type and name (a
    /// message without a schema is not valid).
    fn accepts(&self, env: &Value) -> bool {
        if !self.envelope.is_valid(env) {
            return false;
        }
        match message_key(env).and_then(|k| self.messages.get(&k)) {
            Some(v) => v.is_valid(env),
            None => false,
        }
    }

    fn explain(&self, env: &Value) -> String {
        let mut why: Vec<String> = self
            .envelope
            .iter_errors(env)
            .map(|e| format!("envelope: {e}"))
            .collect();
        if let Some(v) = message_key(env).and_then(|k| self.messages.get(&k)) {
            why.extend(v.iter_errors(env).map(|e| e.to_string()));
        }
        why.join("; ")
    }
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema() {
    let all = schemas();
    assert_eq!(
        all.len(),
        CATALOGUE.len() + 1,
        "one schema per message plus envelope"
    );
    for (key, schema) in &all {
        assert_eq!(schema["$schema"], DRAFT_2020_12, "{key}: $schema");
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("{key} is not a valid draft 2020-12 schema: {e}");
        }
        assert_eq!(
            schema["$id"],
            format!("urn:loophole-ipc:v1:{key}"),
            "{key}: $id"
        );
    }
    // Negative control: the meta-schema check can fail.
    let broken = serde_json::json!({"$schema": DRAFT_2020_12, "type": "object", "maxLength": -1});
    assert!(jsonschema::draft202012::meta::validate(&broken).is_err());
}

#[test]
fn command_bodies_are_strict_and_engine_bodies_are_open() {
    for (key, schema) in schemas() {
        if key == "envelope" {
            continue;
        }
        let body = &schema["properties"]["body"];
        let strict = body.get("additionalProperties") == Some(&Value::Bool(false));
        assert_eq!(
            strict,
            key.starts_with("command."),
            "{key}: additionalProperties"
        );
        let required = schema["required"].as_array().unwrap();
        for k in ["type", "name", "body"] {
            assert!(
                required.contains(&Value::from(k)),
                "{key}: {k} not required"
            );
        }
        let id = required.contains(&Value::from("id"));
        let r#ref = required.contains(&Value::from("ref"));
        assert_eq!(id, key.starts_with("command."), "{key}: id required?");
        assert_eq!(r#ref, key.starts_with("reply."), "{key}: ref required?");
    }
}

#[test]
fn positive_vectors_satisfy_their_schemas() {
    let validators = Validators::new();
    let mut checked = 0;
    for v in vectors() {
        for env in envelopes(&v) {
            assert!(
                validators.accepts(env),
                "vector {} rejected: {}",
                v["name"],
                validators.explain(env)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= CATALOGUE.len(),
        "only {checked} envelopes checked"
    );
}

#[test]
fn negative_vectors_get_the_schema_verdict_they_declare() {
    let validators = Validators::new();
    let (mut rejected, mut accepted) = (0, 0);
    for v in vectors().iter().filter(|v| v["kind"] == "negative") {
        let json = field(v, "json");
        let declared = field(v, "schema_valid");
        if json.is_null() {
            assert!(
                declared.is_null(),
                "vector {}: schema_valid without json",
                v["name"]
            );
            continue;
        }
        let verdict = validators.accepts(json);
        assert_eq!(
            Some(verdict),
            declared.as_bool(),
            "vector {}: schemas say {verdict}",
            v["name"]
        );
        if verdict {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // The schema-level faults of the brief: wrong type, out of range, unknown field, missing id.
    for name in [
        "neg.wrong_field_type",
        "neg.out_of_range.bpm",
        "neg.unknown_field",
        "neg.missing_id",
        "neg.unknown_type",
        "neg.unknown_message",
    ] {
        let v = vectors().into_iter().find(|v| v["name"] == name);
        let v = v.unwrap_or_else(|| panic!("no vector {name}"));
        assert_eq!(
            v["schema_valid"], false,
            "{name} must be a schema-level rejection"
        );
    }
    assert!(
        rejected >= 15 && accepted >= 5,
        "{rejected} rejected, {accepted} accepted"
    );
}

#[test]
fn vector_bytes_match_header_and_json() {
    for v in vectors() {
        let name = &v["name"];
        let bytes = hex(&v);
        match text(&v, "kind") {
            "frame" => {
                let f = frames(&bytes);
                assert_eq!(f.len(), 1, "{name}: one frame");
                let (h, payload) = &f[0];
                assert_eq!(h.len as usize, payload.len(), "{name}: length");
                let payload = match v["attachment"].as_array() {
                    None => {
                        assert_eq!(
                            (h.encoding, h.flags, h.reserved),
                            (1, 0, 0),
                            "{name}: header"
                        );
                        &payload[..]
                    }
                    Some(values) => check_attachment(h, payload, values, field(&v, "json"), name),
                };
                let parsed: Value = serde_json::from_slice(payload).expect("payload is JSON");
                assert_eq!(&parsed, field(&v, "json"), "{name}: payload");
                if v["canonical"] == true {
                    assert_canonical(payload, &parsed, name);
                }
            }
            "stream" => {
                assert_eq!(v["preface"], true, "{name}");
                assert_eq!(&bytes[..8], &PREFACE, "{name}: preface");
                let f = frames(&bytes[8..]);
                let json = field(&v, "json").as_array().unwrap();
                assert!(f.len() >= 2 && f.len() == json.len(), "{name}: frame count");
                for ((h, payload), want) in f.iter().zip(json) {
                    assert_eq!((h.encoding, h.flags, h.reserved), (1, 0, 0), "{name}");
                    let parsed: Value = serde_json::from_slice(payload).expect("JSON");
                    assert_eq!(&parsed, want, "{name}: payload");
                    assert_canonical(payload, &parsed, name);
                }
            }
            "negative" => check_negative(&v, &bytes),
            other => panic!("{name}: unknown kind {other}"),
        }
    }
}

/// framing.md §3.1: flags 0x01, json_len a multiple of 8 padded with spaces, the attachment
/// 8-aligned in the frame, its f32 LE values those of the vector, and the envelope's
/// `attachment` member naming its length. Returns the JSON part (padding included).
fn check_attachment<'p>(
    h: &Header,
    payload: &'p [u8],
    values: &[Value],
    env: &Value,
    name: &Value,
) -> &'p [u8] {
    assert_eq!((h.encoding, h.flags), (1, 1), "{name}: ATTACHMENT flag");
    let json_len = usize::from(h.reserved);
    assert!(
        json_len.is_multiple_of(8) && json_len >= 8 && json_len <= payload.len(),
        "{name}: json_len"
    );
    assert!(
        (HEADER_LEN + json_len).is_multiple_of(8),
        "{name}: attachment 8-aligned"
    );
    let (json, att) = payload.split_at(json_len);
    let text = std::str::from_utf8(json).unwrap();
    let trimmed = text.trim_end_matches(' ');
    assert!(
        json_len - trimmed.len() < 8,
        "{name}: padding is the fewest spaces"
    );
    let got: Vec<f64> = att
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect();
    let want: Vec<f64> = values.iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(att.len() % 4, 0, "{name}");
    assert_eq!(got, want, "{name}: attachment values");
    assert_eq!(env["attachment"]["format"], "f32le", "{name}");
    assert_eq!(
        env["attachment"]["bytes"].as_u64(),
        Some(att.len() as u64),
        "{name}: bytes"
    );
    json
}

/// Compact, ASCII, and the envelope keys in canonical order: type, name, id|ref, attachment,
/// body (trailing padding spaces of an attachment frame aside).
fn assert_canonical(payload: &[u8], env: &Value, name: &Value) {
    let text = std::str::from_utf8(payload).unwrap();
    let text = if env.get("attachment").is_some() {
        text.trim_end_matches(' ')
    } else {
        text
    };
    assert!(text.is_ascii(), "{name}: canonical payloads are ASCII");
    assert!(!text.contains(": ") && !text.contains(", ") && !text.contains('\n'));
    let mut prefix = format!(
        r#"{{"type":"{}","name":"{}","#,
        env["type"].as_str().unwrap(),
        env["name"].as_str().unwrap()
    );
    for key in ["id", "ref"] {
        if let Some(n) = env.get(key) {
            prefix += &format!(r#""{key}":{n},"#);
        }
    }
    if let Some(a) = env.get("attachment") {
        let bytes = &a["bytes"];
        prefix += &format!(r#""attachment":{{"format":"f32le","bytes":{bytes}}},"#);
    }
    prefix += r#""body":{"#;
    assert!(
        text.starts_with(&prefix),
        "{name}: {text} does not start with {prefix}"
    );
    assert!(text.ends_with("}}"), "{name}: body is the last key");
}

/// A negative vector must carry the defect its error code names, and nothing earlier in the
/// check order (errors.md §2) may fail instead.
fn check_negative(v: &Value, bytes: &[u8]) {
    let name = &v["name"];
    let error = field(v, "error").as_str();
    let json = field(v, "json");
    if text(v, "layer") == "preface" {
        assert_eq!(error, None, "{name}: a preface mismatch sends nothing");
        assert_eq!(v["closes"], true, "{name}");
        let first_bad = bytes.iter().zip(PREFACE).position(|(a, b)| *a != b);
        assert!(first_bad.is_some(), "{name}: bytes match the preface");
        return;
    }
    let h = header(bytes);
    let payload = &bytes[HEADER_LEN..];
    if v["partial"] == true {
        assert!(payload.len() < h.len as usize, "{name}: not partial");
    } else {
        assert_eq!(h.len as usize, payload.len(), "{name}: length");
    }
    let code = error.unwrap_or_else(|| panic!("{name}: negative frame without error code"));
    let code_is = |e: Option<&str>, c: &str| e == Some(c);
    let header_ok = h.flags == 0 && h.reserved == 0 && h.encoding == 1;
    // A client frame with the ATTACHMENT flag: the payload is still a (padded) JSON command.
    let payload = if h.flags == 1 && code_is(error, "bad_header") {
        &payload[..usize::from(h.reserved).min(payload.len())]
    } else {
        payload
    };
    match code {
        "frame_too_large" => {
            assert_eq!(v["max_frame"], MAX_FRAME, "{name}");
            // The limit in force when the bytes arrive: 4 096 before hello (framing.md §4).
            let limit = v["frame_limit"].as_u64().map_or(MAX_FRAME, |l| l as u32);
            assert!(limit <= MAX_FRAME && h.len > limit, "{name}");
        }
        "bad_header" => assert!(h.flags != 0 || h.reserved != 0, "{name}"),
        "unsupported_encoding" => {
            assert!(h.flags == 0 && h.reserved == 0 && h.encoding != 1, "{name}")
        }
        "invalid_utf8" => {
            assert!(header_ok && h.len > 0, "{name}");
            assert!(
                std::str::from_utf8(payload).is_err(),
                "{name}: payload is UTF-8"
            );
        }
        "invalid_json" => {
            assert!(header_ok && std::str::from_utf8(payload).is_ok(), "{name}");
            assert!(
                serde_json::from_slice::<Value>(payload).is_err() || protocol_only_fault(payload),
                "{name}: payload parses"
            );
            assert!(json.is_null(), "{name}");
        }
        _ => {
            assert!(header_ok, "{name}: header fault would be reported first");
            let parsed: Value = serde_json::from_slice(payload).expect("payload is JSON");
            // `json` is null for a payload holding -0, whose value parsers disagree on.
            let minus_zero = String::from_utf8_lossy(payload).contains(":-0");
            if !(minus_zero && json.is_null()) {
                assert_eq!(&parsed, json, "{name}: payload");
            }
        }
    }
    // ref is present exactly when the id of a command could be read (errors.md §1).
    let expected_ref = field(v, "ref");
    if let Some(r) = expected_ref.as_u64() {
        let parsed = serde_json::from_slice::<Value>(&bytes[HEADER_LEN..]).ok();
        let json = if json.is_null() {
            parsed.as_ref().unwrap_or(json)
        } else {
            json
        };
        assert_eq!(json["type"], "command", "{name}");
        assert_eq!(json["id"].as_u64(), Some(r), "{name}: ref is the id");
    } else {
        assert!(expected_ref.is_null(), "{name}: ref");
    }
}

#[test]
fn catalogue_schemas_and_vectors_cover_each_other() {
    let catalogue: BTreeSet<&str> = CATALOGUE.into_iter().collect();
    let schema_keys: BTreeSet<String> = schemas().into_keys().filter(|k| k != "envelope").collect();
    let schema_keys: BTreeSet<&str> = schema_keys.iter().map(String::as_str).collect();
    assert_eq!(schema_keys, catalogue, "schema files vs catalogue");

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for v in vectors() {
        assert!(
            names.insert(text(&v, "name").to_owned()),
            "duplicate {}",
            v["name"]
        );
        let direction = text(&v, "direction");
        for env in envelopes(&v) {
            let key = message_key(env).expect("type and name");
            let from_client = key.starts_with("command.");
            assert_eq!(
                direction == "client_to_engine",
                from_client,
                "vector {}: direction",
                v["name"]
            );
            if v["canonical"] == true {
                *seen.entry(key).or_default() += 1;
            }
        }
    }
    let covered: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        covered, catalogue,
        "canonical positive vectors vs catalogue"
    );
}

/// The code table of errors.md §3, the enum of error.error.schema.json and the codes the
/// negative vectors expect must be the same set.
#[test]
fn error_codes_agree_between_errors_md_schema_and_vectors() {
    let doc = fs::read_to_string(spec_dir().join("errors.md")).unwrap();
    let section = doc
        .split("\n## 3. Codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("errors.md has section 3");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let schema = &schemas()["error.error"];
    let listed: Vec<&str> = schema["properties"]["body"]["properties"]["code"]["anyOf"][0]["enum"]
        .as_array()
        .expect("code enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        documented, listed,
        "errors.md §3 vs error.error.schema.json"
    );
    // The Rust enum of wire codes is the same list, in the same order (`bad_preface` names a
    // silent close and is never sent, so the spec does not list it).
    let in_code: Vec<&str> = loophole_ipc::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "bad_preface")
        .collect();
    assert_eq!(
        listed, in_code,
        "error.error.schema.json vs loophole_ipc::ErrorCode"
    );

    let validators = Validators::new();
    for v in vectors().iter().filter(|v| v["kind"] == "negative") {
        if let Some(code) = v["error"].as_str() {
            assert!(
                listed.contains(&code),
                "vector {}: unknown code {code}",
                v["name"]
            );
            // The error frame the engine sends for it satisfies the schema.
            let mut reply = serde_json::json!({
                "type": "error", "name": "error",
                "body": {"code": code, "message": "x"},
            });
            if let Some(r) = v["ref"].as_u64() {
                reply["ref"] = r.into();
            }
            assert!(validators.accepts(&reply), "{}", validators.explain(&reply));
        }
    }
    // A later code is accepted, a malformed one is not (negative control of the anyOf).
    let later = serde_json::json!({"type":"error","name":"error","body":{"code":"new_code_2","message":""}});
    let malformed =
        serde_json::json!({"type":"error","name":"error","body":{"code":"Bad Code","message":""}});
    assert!(validators.accepts(&later));
    assert!(!validators.accepts(&malformed));
}

/// The TypeScript examples in README.md are the files of `clients/typescript/examples/` that the
/// package's tests compile and run, so the two cannot drift apart.
#[test]
fn readme_typescript_examples_are_the_tested_examples() {
    let readme = fs::read_to_string(spec_dir().join("README.md")).unwrap();
    let examples = spec_dir().join("../../../clients/typescript/examples");
    for name in ["spawn-and-control.ts", "connect-only.ts"] {
        let example = fs::read_to_string(examples.join(name)).unwrap();
        assert!(example.contains("@loophole/ipc"));
        let block = format!("```ts\n{}\n```", example.trim());
        assert!(
            readme.contains(&block),
            "README.md's TypeScript block differs from clients/typescript/examples/{name}"
        );
    }
}

/// What the Rust encoder writes — one value of every message, including a 64-channel meters
/// frame and escaped strings — is valid against its schema (an independent validator).
#[test]
fn every_message_our_encoder_writes_satisfies_its_schema() {
    let validators = Validators::new();
    let mut seen = BTreeSet::new();
    common::for_each_payload(|payload, _| {
        let env: Value = serde_json::from_slice(payload).expect("our encoder writes JSON");
        assert!(
            validators.accepts(&env),
            "{}: {}",
            String::from_utf8_lossy(payload),
            validators.explain(&env)
        );
        seen.insert(message_key(&env).unwrap());
    });
    assert_eq!(seen.len(), 27, "one of every message: {seen:?}");
    // Negative control: the same validator rejects an encoded message with a field out of range.
    let mut bad: Value = serde_json::from_str(
        r#"{"type":"command","name":"transport.tempo","id":1,"body":{"bpm":1000.0}}"#,
    )
    .unwrap();
    assert!(!validators.accepts(&bad));
    bad["body"]["bpm"] = Value::from(120.0);
    assert!(validators.accepts(&bad));
}

/// JSON that serde_json accepts but this protocol refuses as `invalid_json` (envelope.md): a
/// surrogate `\u` escape, or arrays and objects nested deeper than 64 levels inside the envelope.
fn protocol_only_fault(payload: &[u8]) -> bool {
    let text = String::from_utf8_lossy(payload).to_ascii_lowercase();
    let surrogate = [
        "\\ud8", "\\ud9", "\\uda", "\\udb", "\\udc", "\\udd", "\\ude", "\\udf",
    ]
    .iter()
    .any(|s| text.contains(s));
    // Strings of the vectors hold no brackets, so counting them is enough here.
    let (mut depth, mut deepest) = (0i32, 0i32);
    for b in payload {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    surrogate || deepest > 65
}

#[test]
fn protocol_only_faults_are_recognised() {
    // Negative control for the exception above: ordinary JSON is not excused.
    assert!(!protocol_only_fault(br#"{"a":[1,{"b":"\u00e9"}]}"#));
    assert!(protocol_only_fault(br#"{"a":"\uD800"}"#));
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(65), "]".repeat(65));
    assert!(protocol_only_fault(deep.as_bytes()));
    let ok = format!("{{\"a\":{}{}}}", "[".repeat(64), "]".repeat(64));
    assert!(!protocol_only_fault(ok.as_bytes()));
}

/// Issue 14: what our encoder writes with an attachment satisfies the schemas too (the JSON part,
/// padding included, with its `attachment` member and without the arrays), and the schemas see
/// the difference between the forms: the same envelope with the arrays and an `attachment`
/// member, or with neither, is rejected.
#[test]
fn attachment_frames_our_encoder_writes_satisfy_their_schemas() {
    use loophole_ipc::message::{encode_frame_with_attachment, Scope, Spectrum};
    let validators = Validators::new();
    let scope = Scope {
        tap: 0,
        points: 16,
        samples_per_point: 8,
        sample: 1,
        missed: 0,
        values: None,
    };
    let spectrum = Spectrum {
        tap: 1,
        bins: 1024,
        sample_rate: 48_000,
        sample: 1,
        missed: 0,
        values: None,
    };
    for i in 0..2 {
        let mut b = vec![0u8; 16_384];
        if i == 0 {
            encode_frame_with_attachment(None, &scope, &common::SCOPE, &mut b, 65_536).unwrap();
        } else {
            encode_frame_with_attachment(None, &spectrum, &[-70.0; 1024], &mut b, 65_536).unwrap();
        }
        let h = header(&b);
        assert_eq!(h.flags, 1);
        let json = &b[HEADER_LEN..HEADER_LEN + usize::from(h.reserved)];
        let env: Value = serde_json::from_slice(json).expect("JSON part");
        assert!(validators.accepts(&env), "{}", validators.explain(&env));
        // Negative controls: both forms at once, or neither, fail the schema.
        let mut both = env.clone();
        let key = if i == 0 { "min" } else { "db" };
        both["body"][key] = Value::from(vec![0.0; 4]);
        if i == 0 {
            both["body"]["max"] = Value::from(vec![0.0; 4]);
        }
        assert!(!validators.accepts(&both), "arrays and attachment together");
        let mut neither = env.clone();
        neither.as_object_mut().unwrap().remove("attachment");
        assert!(!validators.accepts(&neither), "no arrays and no attachment");
    }
}

#!/usr/bin/env python3
"""Writes vectors.json, the golden byte vectors of loophole-ipc protocol version 1.

This script is the source; vectors.json is the product. `python3 make_vectors.py` rewrites it,
`python3 make_vectors.py --check` fails when the file on disk differs. The format is described in
README.md beside this script; the rules the bytes follow are ../framing.md and ../envelope.md.

Canonical payloads are what an encoder of this protocol emits: compact JSON (no whitespace), keys
in the order type, name, id|ref, attachment (frames with an attachment only), body; body keys in the order of envelope.md's tables; optional
fields omitted when absent; floats in shortest round-trip form with a `.0` on whole numbers (as
Rust's ryu prints an f32: `1.0`, `0.5`, `120.0`). Strings are plain ASCII, so no escaping question
arises in canonical bytes.
"""

import json
import pathlib
import re
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "vectors.json"

PREFACE = bytes([0x89, 0x4C, 0x50, 0x48, 0x0D, 0x0A, 0x1A, 0x0A])
MAX_FRAME = 65536
C2E = "client_to_engine"
E2C = "engine_to_client"


# ---------------------------------------------------------------- encoding helpers

def check_canonical_values(value, where):
    """Refuses values whose canonical text this script could get wrong."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        assert 0 <= value <= 2**53 - 1, (where, value)
    elif isinstance(value, float):
        # Exact in f32 and short: Python's repr of the f64 is then what ryu prints for the f32.
        assert struct.unpack("<f", struct.pack("<f", value))[0] == value, (where, value)
        assert value == 0.0 or 1e-3 <= abs(value) < 1e7, (where, value)
        assert len(repr(value).replace(".", "").lstrip("0-")) <= 7, (where, value)
    elif isinstance(value, str):
        assert re.fullmatch(r'[\x20-\x7e]*', value) and '"' not in value and "\\" not in value, (where, value)
    elif isinstance(value, list):
        for v in value:
            check_canonical_values(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_canonical_values(k, where)
            check_canonical_values(v, where)
    else:
        raise AssertionError((where, value))


def envelope(mtype, name, body, id=None, ref=None):
    env = {"type": mtype, "name": name}
    if id is not None:
        env["id"] = id
    if ref is not None:
        env["ref"] = ref
    env["body"] = body
    return env


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def with_attachment(env, values):
    """`env` with the `attachment` member after name (and ref), for `values` f32s."""
    out = {}
    for k, v in env.items():
        if k == "body":
            out["attachment"] = {"format": "f32le", "bytes": 4 * len(values)}
        out[k] = v
    return out


def attachment_frame(env, values):
    """framing.md 3.1: the envelope padded with spaces to a multiple of 8, then f32 LE values."""
    js = compact(env)
    js += b" " * (-len(js) % 8)
    att = struct.pack("<%df" % len(values), *values)
    return header(len(js) + len(att), flags=1, reserved=len(js)) + js + att


def header(length, encoding=1, flags=0, reserved=0):
    return struct.pack(">IBBH", length, encoding, flags, reserved)


def frame(payload, **hdr):
    return header(len(payload), **hdr) + payload


# ---------------------------------------------------------------- positive vectors

VECTORS = []


def positive(name, direction, env, description):
    check_canonical_values(env, name)
    VECTORS.append({
        "name": name,
        "description": description,
        "kind": "frame",
        "direction": direction,
        "canonical": True,
        "hex": frame(compact(env)).hex(),
        "json": env,
    })


def positive_attachment(name, env, values, same_values_as, description):
    """An engine frame with a binary attachment: `json` is the envelope without the arrays,
    `attachment` the f32 values the attachment holds (exact in f32)."""
    check_canonical_values(env, name)
    for v in values:
        assert struct.unpack("<f", struct.pack("<f", v))[0] == v, (name, v)
    VECTORS.append({
        "name": name,
        "description": description,
        "kind": "frame",
        "direction": E2C,
        "canonical": True,
        "hex": attachment_frame(env, values).hex(),
        "json": env,
        "attachment": values,
        "same_values_as": same_values_as,
    })


def decode_only(name, direction, payload, same_as, description):
    """A valid frame that is not canonical: decoders must accept it, encoders never emit it."""
    VECTORS.append({
        "name": name,
        "description": description,
        "kind": "frame",
        "direction": direction,
        "canonical": False,
        "same_as": same_as,
        "hex": frame(payload).hex(),
        "json": json.loads(payload),
    })


# Session
positive("command.hello", C2E,
         envelope("command", "hello", {"protocol": 1, "client": "aura/0.1.0"}, id=1),
         "hello without token (engine started without a session token).")
positive("command.hello.token", C2E,
         envelope("command", "hello", {"protocol": 1, "client": "aura/0.1.0",
                                       "token": "5b9e2c41d07a3f68"}, id=1),
         "hello with a session token.")
positive("reply.welcome", E2C,
         envelope("reply", "welcome", {
             "protocol": 1, "engine": "signal/0.1.0", "instance": "9f86d081884c7d65",
             "sample_rate": 48000, "block_size": 256, "max_frame": 65536,
             "heartbeat_ms": 1000, "timeout_ms": 5000, "attachments": False, "taps": 0}, ref=1),
         "welcome answering hello id 1 (the values are examples, not defaults): no attachments "
         "(the hello did not ask), no analysis taps.")
positive("command.hello.attachments", C2E,
         envelope("command", "hello", {"protocol": 1, "client": "aura/0.1.0", "attachments": True},
                  id=1),
         "hello asking for binary attachments (framing.md section 3.1).")
positive("reply.welcome.attachments", E2C,
         envelope("reply", "welcome", {
             "protocol": 1, "engine": "signal/0.1.0", "instance": "9f86d081884c7d65",
             "sample_rate": 48000, "block_size": 256, "max_frame": 65536,
             "heartbeat_ms": 1000, "timeout_ms": 5000, "attachments": True, "taps": 2}, ref=1),
         "welcome answering command.hello.attachments: the engine agrees and has 2 taps; scope "
         "and spectrum frames of this session carry their values as attachments.")
positive("command.ping", C2E,
         envelope("command", "ping", {"nonce": 1}, id=7),
         "The ping of framing.md section 6: payload 58 bytes.")
positive("command.ping.rt", C2E,
         envelope("command", "ping", {"nonce": 2, "t_client_us": 1234567, "rt": True}, id=8),
         "ping with every optional field: travels through the audio thread.")
positive("reply.pong", E2C,
         envelope("reply", "pong", {"nonce": 1, "t_engine_us": 5000123}, ref=7),
         "pong answering command.ping: no t_client_us, no sample.")
positive("reply.pong.rt", E2C,
         envelope("reply", "pong", {"nonce": 2, "t_client_us": 1234567, "t_engine_us": 5000456,
                                    "sample": 48000}, ref=8),
         "pong answering command.ping.rt: echoes t_client_us, carries the sample clock.")
positive("command.goodbye", C2E,
         envelope("command", "goodbye", {}, id=30),
         "The client ends the session; the engine acks and closes.")
positive("error.goodbye", E2C,
         envelope("error", "goodbye", {"reason": "shutdown"}),
         "The engine ends the session (no ref: it answers no command) and closes.")
positive("error.goodbye.heartbeat_timeout", E2C,
         envelope("error", "goodbye", {"reason": "heartbeat_timeout"}),
         "The engine heard nothing for timeout_ms and closes.")

# Transport
positive("command.transport.play", C2E, envelope("command", "transport.play", {}, id=10),
         "Start the transport; empty body.")
positive("command.transport.stop", C2E, envelope("command", "transport.stop", {}, id=11),
         "Stop the transport; empty body.")
positive("command.transport.seek", C2E,
         envelope("command", "transport.seek", {"sample": 96000}, id=12),
         "Seek to sample 96000.")
positive("command.transport.tempo", C2E,
         envelope("command", "transport.tempo", {"bpm": 120.0}, id=13),
         "Tempo 120 bpm; a whole float is written 120.0 by a canonical encoder.")
positive("command.transport.loop", C2E,
         envelope("command", "transport.loop", {"start": 0, "end": 192000, "enabled": True}, id=14),
         "Loop samples 0 .. 192000.")
positive("telemetry.transport.state", E2C,
         envelope("telemetry", "transport.state", {
             "playing": True, "position": 96000, "bpm": 120.0, "loop_start": 0,
             "loop_end": 192000, "loop_enabled": False}),
         "Transport snapshot; telemetry has neither id nor ref.")

# Parameters
positive("command.param.set", C2E,
         envelope("command", "param.set", {"node": 3, "param": 1, "value": 0.5}, id=42),
         "The example of envelope.md: no ramp.")
positive("command.param.set.ramp", C2E,
         envelope("command", "param.set", {"node": 3, "param": 1, "value": 0.25, "ramp_ms": 50.0},
                  id=43),
         "param.set with a 50 ms ramp.")

# Graph and engine
positive("command.graph.add_node", C2E,
         envelope("command", "graph.add_node", {"node": 3, "kind": "osc"}, id=20),
         "Add node 3 of kind osc.")
positive("command.graph.remove_node", C2E,
         envelope("command", "graph.remove_node", {"node": 3}, id=21),
         "Remove node 3.")
positive("command.graph.connect", C2E,
         envelope("command", "graph.connect", {"from": 3, "from_port": 0, "to": 4, "to_port": 1},
                  id=22),
         "Connect node 3 output 0 to node 4 input 1.")
positive("command.graph.disconnect", C2E,
         envelope("command", "graph.disconnect", {"from": 3, "from_port": 0, "to": 4, "to_port": 1},
                  id=23),
         "Remove that connection.")
positive("command.engine.shutdown", C2E,
         envelope("command", "engine.shutdown", {}, id=31),
         "Ask the engine to exit.")

# Telemetry
positive("command.telemetry.subscribe", C2E,
         envelope("command", "telemetry.subscribe", {"stream": "meters", "rate_hz": 30}, id=2),
         "Subscribe to meters at 30 frames per second.")
positive("command.telemetry.unsubscribe", C2E,
         envelope("command", "telemetry.unsubscribe", {"stream": "meters"}, id=3),
         "End the meters subscription.")
positive("command.telemetry.subscribe.scope", C2E,
         envelope("command", "telemetry.subscribe",
                  {"stream": "scope", "rate_hz": 30, "tap": 0, "points": 256}, id=4),
         "Subscribe to the scope of tap 0, 256 points (min and max each), 30 frames per second.")
positive("command.telemetry.subscribe.spectrum", C2E,
         envelope("command", "telemetry.subscribe",
                  {"stream": "spectrum", "rate_hz": 60, "tap": 1, "bins": 1024}, id=5),
         "Subscribe to a 1024-bin spectrum of tap 1 at 60 frames per second (the highest rate "
         "of an analysis stream).")
positive("command.telemetry.unsubscribe.scope", C2E,
         envelope("command", "telemetry.unsubscribe", {"stream": "scope", "tap": 0}, id=6),
         "End the scope subscription of tap 0 only.")
positive("command.telemetry.unsubscribe.spectrum", C2E,
         envelope("command", "telemetry.unsubscribe", {"stream": "spectrum"}, id=9),
         "End every spectrum subscription (no tap: all taps).")
SCOPE_MIN = [-0.5, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5,
             -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]
SCOPE_MAX = [-0.25, 0.0, 0.125, 0.25, 0.5, 0.5, 0.625, 1.0,
             -0.5, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
SCOPE_BODY = {"tap": 0, "points": 16, "samples_per_point": 8, "sample": 48128, "missed": 0}
positive("telemetry.scope", E2C,
         envelope("telemetry", "scope", dict(SCOPE_BODY, min=SCOPE_MIN, max=SCOPE_MAX)),
         "16 scope points as JSON arrays: min and max of the 8 samples each point covers.")
positive_attachment("telemetry.scope.attachment",
                    with_attachment(envelope("telemetry", "scope", SCOPE_BODY),
                                    SCOPE_MIN + SCOPE_MAX),
                    SCOPE_MIN + SCOPE_MAX, "telemetry.scope",
                    "telemetry.scope with an attachment: no min/max in the body; the attachment "
                    "holds 32 f32 (min[0..16] then max[0..16]), 128 bytes at frame offset 8 + "
                    "json_len, a multiple of 8.")
SPECTRUM_DB = [-160.0, -96.5, -48.25, -12.0, -6.0, 0.0, -3.5, -24.0,
               -60.0, -72.0, -80.0, -90.0, -100.0, -120.0, -140.0, -160.0]
SPECTRUM_BODY = {"tap": 1, "bins": 16, "sample_rate": 48000, "sample": 48128, "missed": 256}
positive("telemetry.spectrum", E2C,
         envelope("telemetry", "spectrum", dict(SPECTRUM_BODY, db=SPECTRUM_DB)),
         "16 linear bins of 1500 Hz at 48 kHz as a JSON array, dBFS with the -160 dB floor; the "
         "reader lost 256 samples since the previous frame.")
positive_attachment("telemetry.spectrum.attachment",
                    with_attachment(envelope("telemetry", "spectrum", SPECTRUM_BODY), SPECTRUM_DB),
                    SPECTRUM_DB, "telemetry.spectrum",
                    "telemetry.spectrum with an attachment: no db in the body; 16 f32 (64 bytes).")
positive("telemetry.meters", E2C,
         envelope("telemetry", "meters", {"peak": [0.5, 0.25], "rms": [0.25, 0.125]}),
         "Two channels.")
positive("telemetry.meters.silent", E2C,
         envelope("telemetry", "meters", {"peak": [0.0, 0.0], "rms": [0.0, 0.0]}),
         "Silence: a zero float is written 0.0.")
positive("telemetry.engine.health", E2C,
         envelope("telemetry", "engine.health", {
             "callbacks": 1875, "xruns": 0, "dsp_load": 0.25, "cmd_queue_len": 0,
             "cmd_queue_capacity": 1024, "cmd_queue_high": 3, "reply_queue_high": 2,
             "telemetry_dropped": 0, "telemetry_shed": 0}),
         "Health snapshot.")

# Replies and diagnostics
positive("reply.ack", E2C, envelope("reply", "ack", {}, ref=11),
         "ack without sample (net- or control-route command).")
positive("reply.ack.sample", E2C, envelope("reply", "ack", {"sample": 96256}, ref=42),
         "ack of an audio-route command: the sample clock at which it took effect.")
positive("error.error", E2C,
         envelope("error", "error", {"code": "unknown_node", "message": "node 3 does not exist"},
                  ref=42),
         "A command failed: ref names it.")
positive("error.error.no_ref", E2C,
         envelope("error", "error", {"code": "invalid_json", "message": "payload is not JSON"}),
         "A frame failed before its id could be read: no ref.")
positive("error.log", E2C,
         envelope("error", "log", {"level": "warn", "message": "audio device restarted"}),
         "A diagnostic line.")

# Extremes
positive("command.hello.empty_client", C2E,
         envelope("command", "hello", {"protocol": 1, "client": ""}, id=1),
         "client may be empty (0 to 64 bytes; it is only for the engine's logs).")
positive("telemetry.transport.state.max", E2C,
         envelope("telemetry", "transport.state", {
             "playing": True, "position": 2**53 - 1, "bpm": 120.0, "loop_start": 0,
             "loop_end": 0, "loop_enabled": False}),
         "The largest position an engine sends: it clamps at 2^53-1 (stays there while playing).")
positive("command.param.set.max", C2E,
         envelope("command", "param.set", {"node": 4294967295, "param": 0, "value": 1.0}, id=4294967295),
         "Largest u32 id and node; value 1.0.")

# ---------------------------------------------------------------- decode-only vectors

decode_only("decode.key_order", C2E,
            b'{"body":{"value":0.5,"param":1,"node":3},"id":42,"name":"param.set","type":"command"}',
            "command.param.set", "Keys in any order, envelope and body.")
decode_only("decode.whitespace", C2E,
            b' {\n  "type": "command",\n  "name": "param.set",\n  "id": 42,\n'
            b'  "body": { "node": 3, "param": 1, "value": 0.5 }\n}\n',
            "command.param.set", "JSON whitespace around and inside the object.")
decode_only("decode.integer_float", C2E,
            b'{"type":"command","name":"transport.tempo","id":13,"body":{"bpm":120}}',
            "command.transport.tempo",
            "A float field written as an integer, as JavaScript's JSON.stringify(120.0) does.")
decode_only("decode.exponent_float", C2E,
            b'{"type":"command","name":"param.set","id":42,"body":{"node":3,"param":1,"value":5e-1}}',
            "command.param.set", "A float written with an exponent.")
decode_only("decode.unknown_envelope_key", C2E,
            b'{"type":"command","name":"transport.play","id":10,"trace":"abc","body":{}}',
            "command.transport.play", "Unknown envelope keys are ignored.")
decode_only("decode.unknown_envelope_key_twice", C2E,
            b'{"type":"command","name":"transport.play","id":10,"trace":"a","trace":"b","body":{}}',
            "command.transport.play",
            "An unknown envelope key is ignored, also when it appears twice: only the keys of the "
            "envelope table may not repeat.")
decode_only("decode.string_escapes", C2E,
            b'{"type":"command","name":"hello","id":1,"body":{"protocol":1,"client":"aura\\/0.1.0"}}',
            "command.hello", "JSON escapes are decoded: \\/ is /.")
decode_only("decode.unicode_escape", C2E,
            b'{"type":"command","name":"graph.add_node","id":20,"body":{"node":3,"kind":"\\u006fsc"}}',
            "command.graph.add_node", "\\u escapes are decoded: \\u006f is o.")
decode_only("decode.escaped_name", C2E,
            b'{"type":"command","name":"transport\\u002eplay","id":10,"body":{}}',
            "command.transport.play", "Escapes are decoded in name: \\u002e is the dot.")
decode_only("decode.escaped_type", C2E,
            b'{"type":"comm\\u0061nd","name":"transport.play","id":10,"body":{}}',
            "command.transport.play", "Escapes are decoded in type.")
decode_only("decode.escaped_keys", C2E,
            b'{"t\\u0079pe":"command","n\\u0061me":"param.set","\\u0069d":42,'
            b'"body":{"n\\u006fde":3,"param":1,"value":0.5}}',
            "command.param.set", "Escapes are decoded in keys, the envelope's and the body's.")
decode_only("decode.nesting_64", C2E,
            b'{"type":"command","name":"transport.play","id":10,"trace":' + b"[" * 64 + b"]" * 64
            + b',"body":{}}',
            "command.transport.play",
            "64 levels of arrays inside the envelope, in an ignored key: the deepest accepted.")
decode_only("decode.welcome_unknown_field", E2C,
            b'{"type":"reply","name":"welcome","ref":1,"body":{"protocol":1,"engine":"signal/0.1.0",'
            b'"instance":"9f86d081884c7d65","sample_rate":48000,"block_size":256,"max_frame":65536,'
            b'"heartbeat_ms":1000,"timeout_ms":5000,"future_field":[1,2],"attachments":false,'
            b'"taps":0}}',
            "reply.welcome", "Clients ignore body fields they do not know in what the engine sends.")

# ---------------------------------------------------------------- streams

def stream(name, direction, envs, description):
    for env in envs:
        check_canonical_values(env, name)
    data = PREFACE + b"".join(frame(compact(env)) for env in envs)
    VECTORS.append({
        "name": name,
        "description": description,
        "kind": "stream",
        "direction": direction,
        "canonical": True,
        "preface": True,
        "hex": data.hex(),
        "json": envs,
    })


stream("stream.client_open", C2E,
       [envelope("command", "hello", {"protocol": 1, "client": "aura/0.1.0"}, id=1),
        envelope("command", "telemetry.subscribe", {"stream": "meters", "rate_hz": 30}, id=2)],
       "What a client writes first: preface, hello, subscribe, in one write.")
stream("stream.engine_open", E2C,
       [envelope("reply", "welcome", {
           "protocol": 1, "engine": "signal/0.1.0", "instance": "9f86d081884c7d65",
           "sample_rate": 48000, "block_size": 256, "max_frame": 65536,
           "heartbeat_ms": 1000, "timeout_ms": 5000, "attachments": False, "taps": 0}, ref=1),
        envelope("telemetry", "transport.state", {
            "playing": False, "position": 0, "bpm": 120.0, "loop_start": 0,
            "loop_end": 0, "loop_enabled": False}),
        envelope("telemetry", "engine.health", {
            "callbacks": 0, "xruns": 0, "dsp_load": 0.0, "cmd_queue_len": 0,
            "cmd_queue_capacity": 1024, "cmd_queue_high": 0, "reply_queue_high": 0,
            "telemetry_dropped": 0, "telemetry_shed": 0})],
       "What the engine answers: its preface, welcome, then the two snapshots.")

# ---------------------------------------------------------------- negative vectors

# Negative vectors whose `json` the schemas accept: the fault is outside what JSON Schema sees
# (header bytes, duplicate keys, integer written as 7.0, direction, a rule across two fields,
# session state). Every other negative vector with a `json` value is rejected by the schemas.
SCHEMA_BLIND = {
    "neg.unsupported_encoding", "neg.bad_header.flags", "neg.bad_header.reserved",
    "neg.duplicate_id", "neg.client_sends_reply", "neg.id_float", "neg.integer_field_float",
    "neg.out_of_range.loop", "neg.hello_required", "neg.protocol_version",
    "neg.already_established", "neg.unknown_type.client_reply_with_id",
    "neg.bad_header.attachment_from_client", "neg.subscribe.tap_out_of_range",
}


def negative(name, layer, data, json_value, error, ref, closes, description, state="established",
             **extra):
    """Bytes the engine must reject. `data` is the whole input after the preface exchange (for
    layer "preface", the first bytes of the connection)."""
    schema_valid = None if json_value is None else name in SCHEMA_BLIND
    v = {
        "name": name,
        "description": description,
        "kind": "negative",
        "direction": C2E,
        "layer": layer,
        "state": state,
        "hex": data.hex(),
        "json": json_value,
        "error": error,
        "ref": ref,
        "closes": closes,
        "schema_valid": schema_valid,
    }
    v.update(extra)
    VECTORS.append(v)


def neg_env(name, layer, env, error, ref, closes, description, state="established"):
    negative(name, layer, frame(compact(env)), env, error, ref, closes, description, state)


def strict_json(payload):
    """The payload as JSON, or None: for this protocol NaN/Infinity and surrogate escapes are not
    JSON (envelope.md), though Python's parser takes them."""
    def refuse(constant):
        raise ValueError(constant)
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError):
        return None
    if re.search(rb"\\u[dD][89a-fA-F]", payload) or re.search(rb"[:\[,]\s*-0(?![.eE0-9])", payload):
        return None  # parsers disagree on -0 (an integer 0 here, a float -0.0 in others)
    return value


def neg_raw(name, layer, payload, error, ref, closes, description, state="established", **hdr):
    # A payload the engine calls invalid_json (or invalid_utf8) has no `json`, whatever a lenient
    # parser makes of it.
    value = None if error in ("invalid_json", "invalid_utf8") else strict_json(payload)
    negative(name, layer, frame(payload, **hdr), value, error, ref, closes, description, state)


PING = envelope("command", "ping", {"nonce": 1}, id=7)

negative("neg.preface.http", "preface", b"GET / HTTP/1.1\r\n", None, None, None, True,
         "An HTTP client: byte 0 differs from the preface, the engine closes without a word.",
         state="connected")
negative("neg.preface.last_byte", "preface", PREFACE[:7] + b"\x00", None, None, None, True,
         "Preface wrong in its last byte: closed without a word.", state="connected")
negative("neg.frame_too_large", "frame", header(MAX_FRAME + 1), None, "frame_too_large", None, True,
         "Declared length 65537 with max_frame 65536: header only, the engine does not wait for "
         "the payload; error then close.", max_frame=MAX_FRAME, partial=True)
neg_raw("neg.unsupported_encoding", "frame", compact(PING), "unsupported_encoding", None, False,
        "Encoding byte 0x02; the frame (length known) is skipped.", encoding=2)
neg_raw("neg.bad_header.flags", "frame", compact(PING), "bad_header", None, False,
        "Flags byte 0x01.", flags=1)
neg_raw("neg.bad_header.reserved", "frame", compact(PING), "bad_header", None, False,
        "Reserved field 0x0001.", reserved=1)
neg_raw("neg.empty_payload", "frame", b"", "invalid_json", None, False,
        "Length 0 with encoding 1: an empty payload is not a JSON object.")
neg_raw("neg.invalid_utf8", "frame",
        b'{"type":"command","name":"hello","id":1,"body":{"protocol":1,"client":"aura\xff"}}',
        "invalid_utf8", None, False, "Byte 0xff inside a string: not UTF-8, no ref.")
neg_raw("neg.invalid_json", "envelope", b'{"type":"command","name":"ping","id":7,"body":{"nonce":1}',
        "invalid_json", None, False, "Missing closing brace.")
neg_raw("neg.trailing_data", "envelope", compact(PING) + b"x", "invalid_json", None, False,
        "A byte other than whitespace after the object.")
neg_raw("neg.not_object", "envelope", b"[1,2]", "invalid_envelope", None, False,
        "Valid JSON that is not an object.")
neg_raw("neg.duplicate_id", "envelope",
        b'{"type":"command","name":"ping","id":7,"id":8,"body":{"nonce":1}}',
        "invalid_envelope", None, False,
        "Envelope key id twice: invalid_envelope, and no ref (which id?). `json` shows what a "
        "last-wins parser makes of it.")
neg_env("neg.unknown_type", "envelope", envelope("request", "ping", {"nonce": 1}, id=7),
        "unknown_type", None, False, "type must be command, reply, telemetry or error; no ref.")
neg_env("neg.client_sends_reply", "envelope", envelope("reply", "ack", {}, ref=7),
        "unknown_type", None, False,
        "A client may only send commands: any other type from a client is unknown_type.")
neg_env("neg.unknown_message", "envelope", envelope("command", "transport.rewind", {}, id=9),
        "unknown_message", 9, False, "A command name version 1 does not define; stays open.")
neg_env("neg.bad_name", "envelope", envelope("command", "Transport.Play", {}, id=9),
        "invalid_envelope", 9, False, "name outside [a-z0-9._]{1,32}.")
neg_env("neg.missing_id", "envelope", envelope("command", "transport.play", {}),
        "invalid_envelope", None, False, "A command without id: no ref is possible.")
neg_env("neg.id_out_of_range", "envelope", envelope("command", "transport.play", {}, id=4294967296),
        "invalid_envelope", None, False, "id above u32: not a readable id, no ref.")
neg_raw("neg.id_float", "envelope", b'{"type":"command","name":"transport.play","id":7.0,"body":{}}',
        "invalid_envelope", None, False, "id written with a fraction: not an integer, no ref.")
neg_raw("neg.missing_body", "envelope", b'{"type":"command","name":"transport.play","id":10}',
        "invalid_envelope", 10, False, "body is required even when empty; the id is readable.")
neg_env("neg.wrong_field_type", "body", envelope("command", "param.set",
                                                 {"node": "3", "param": 1, "value": 0.5}, id=44),
        "invalid_field", 44, False, "node is a string, not an integer.")
neg_raw("neg.integer_field_float", "body",
        b'{"type":"command","name":"transport.seek","id":45,"body":{"sample":96000.0}}',
        "invalid_field", 45, False,
        "An integer field written with a fraction (JSON Schema's integer type cannot see this).")
neg_env("neg.missing_field", "body", envelope("command", "param.set", {"node": 3, "param": 1}, id=46),
        "invalid_field", 46, False, "Required field value missing.")
neg_env("neg.unknown_field", "body",
        envelope("command", "param.set", {"node": 3, "param": 1, "value": 0.5, "ramp": 50}, id=47),
        "invalid_field", 47, False, "ramp is not a field of param.set (ramp_ms is).")
neg_env("neg.unknown_field.empty_body", "body", envelope("command", "transport.play", {"at": 0}, id=48),
        "invalid_field", 48, False, "transport.play takes no field.")
neg_env("neg.out_of_range.bpm", "body", envelope("command", "transport.tempo", {"bpm": 1000.0}, id=50),
        "out_of_range", 50, False, "bpm above 999.")
neg_env("neg.out_of_range.bpm_low", "body", envelope("command", "transport.tempo", {"bpm": 19.5}, id=51),
        "out_of_range", 51, False, "bpm below 20.")
neg_env("neg.out_of_range.u32", "body",
        envelope("command", "param.set", {"node": 4294967296, "param": 1, "value": 0.5}, id=52),
        "out_of_range", 52, False, "node above u32: an integer, but out of range.")
neg_env("neg.out_of_range.u16", "body",
        envelope("command", "graph.connect", {"from": 3, "from_port": 65536, "to": 4, "to_port": 1}, id=53),
        "out_of_range", 53, False, "from_port above u16.")
neg_env("neg.out_of_range.rate_hz", "body",
        envelope("command", "telemetry.subscribe", {"stream": "meters", "rate_hz": 0}, id=54),
        "out_of_range", 54, False, "rate_hz below 1.")
neg_env("neg.out_of_range.ramp_ms", "body",
        envelope("command", "param.set", {"node": 3, "param": 1, "value": 0.5, "ramp_ms": 60001.0}, id=55),
        "out_of_range", 55, False, "ramp_ms above 60000.")
neg_env("neg.out_of_range.loop", "body",
        envelope("command", "transport.loop", {"start": 1000, "end": 1000, "enabled": True}, id=56),
        "out_of_range", 56, False,
        "Enabled loop with end not greater than start: a rule across two fields, which the "
        "schema does not express (the schema accepts this message).")
neg_env("neg.bad_enum", "body",
        envelope("command", "telemetry.subscribe", {"stream": "waveform", "rate_hz": 30}, id=57),
        "invalid_field", 57, False, "stream outside its enumeration.")
neg_env("neg.hello_required", "session", PING, "hello_required", 7, False,
        "A command before hello: refused, the client may still send hello.", state="awaiting_hello")
neg_env("neg.protocol_version", "session",
        envelope("command", "hello", {"protocol": 2, "client": "aura/9.0.0"}, id=1),
        "protocol_version", 1, True, "A version the engine does not implement: error then close.",
        state="awaiting_hello")
neg_env("neg.already_established", "session",
        envelope("command", "hello", {"protocol": 1, "client": "aura/0.1.0"}, id=5),
        "already_established", 5, False, "A second hello in an established session.")

# Edges settled by issue 10 (errors.md section 2 and the rules of envelope.md).
PING_HEAD = b'{"type":"command","name":"ping","id":7,"body":'
neg_raw("neg.invalid_json.leading_zero_in_body", "envelope", PING_HEAD + b'{"nonce":01}}',
        "invalid_json", None, False,
        "A syntax error inside body is a syntax error of the payload: invalid_json, never a ref "
        "(the JSON is checked whole before the envelope is read).")
neg_raw("neg.invalid_json.trailing_comma_in_body", "envelope", PING_HEAD + b'{"nonce":1,}}',
        "invalid_json", None, False, "A trailing comma inside body: invalid_json, no ref.")
neg_raw("neg.invalid_json.bad_literal_in_body", "envelope", PING_HEAD + b'{"nonce":1,"rt":tru}}',
        "invalid_json", None, False, "`tru` is not a JSON literal: invalid_json, no ref.")
PARAM_HEAD = b'{"type":"command","name":"param.set","id":42,"body":{"node":3,"param":1,"value":'
neg_raw("neg.invalid_json.nan", "envelope", PARAM_HEAD + b'NaN}}', "invalid_json", None, False,
        "NaN is not JSON: invalid_json, no ref (not invalid_field).")
neg_raw("neg.invalid_json.infinity", "envelope", PARAM_HEAD + b'Infinity}}', "invalid_json", None,
        False, "Infinity is not JSON: invalid_json, no ref.")
neg_raw("neg.invalid_json.minus_infinity", "envelope", PARAM_HEAD + b'-Infinity}}', "invalid_json",
        None, False, "-Infinity is not JSON: invalid_json, no ref.")
neg_raw("neg.check_order.json_before_envelope", "envelope",
        b'{"type":"reply","name":"ack","body":{"x":01}}', "invalid_json", None, False,
        "Both a syntax error (in body) and an envelope fault (a reply from a client, without ref): "
        "the JSON check comes first.")
neg_raw("neg.invalid_json.lone_surrogate", "envelope",
        b'{"type":"command","name":"hello","id":1,"body":{"protocol":1,"client":"\\ud800"}}',
        "invalid_json", None, False,
        "A \\u escape of a surrogate is never valid in this protocol: invalid_json, no ref.",
        state="awaiting_hello")
neg_raw("neg.invalid_json.surrogate_pair", "envelope",
        b'{"type":"command","name":"ping","id":7,"trace":"\\ud83c\\udfb5","body":{"nonce":1}}',
        "invalid_json", None, False,
        "A surrogate pair escape, even in an ignored key: invalid_json. Characters outside the BMP "
        "are sent as UTF-8 (JSON.stringify does).")
DEEP = 65
neg_raw("neg.invalid_json.too_deep", "envelope",
        b'{"type":"command","name":"transport.play","id":10,"trace":' + b"[" * DEEP + b"]" * DEEP
        + b',"body":{}}', "invalid_json", None, False,
        "65 levels of arrays inside the envelope (64 is the limit, the envelope object not "
        "counted), in a key the engine ignores: invalid_json, no ref.")
neg_raw("neg.escaped_unknown_name", "envelope",
        b'{"type":"command","name":"transport\\u002erewind","id":9,"body":{}}',
        "unknown_message", 9, False,
        "name escapes are decoded: this is transport.rewind, an unknown command.")
neg_raw("neg.unknown_type.client_reply_with_id", "envelope",
        b'{"type":"reply","name":"ack","id":7,"ref":7,"body":{}}', "unknown_type", None, False,
        "A reply from a client carrying an id: unknown_type, and no ref (a ref only answers a "
        "command).")
neg_raw("neg.unknown_type.client_reply_without_ref", "envelope",
        b'{"type":"reply","name":"ack","body":{}}', "unknown_type", None, False,
        "Any type but command from a client is unknown_type, whatever else its envelope lacks.")
neg_raw("neg.id_minus_zero", "envelope", b'{"type":"command","name":"transport.play","id":-0,"body":{}}',
        "invalid_envelope", None, False,
        "-0 is not an integer of this protocol (integers are written without sign): the id is "
        "not readable, no ref.")
neg_raw("neg.out_of_range.minus_zero", "body", PING_HEAD + b'{"nonce":-0}}', "out_of_range", 7, False,
        "A body integer written with a minus sign is negative, even -0: out_of_range.")
neg_raw("neg.hello_required.unknown_name", "session",
        b'{"type":"command","name":"transport.rewind","id":9,"body":{}}', "hello_required", 9, False,
        "Before hello the session check comes before the name: hello_required, not "
        "unknown_message.", state="awaiting_hello")
neg_raw("neg.hello_required.bad_body", "session",
        b'{"type":"command","name":"param.set","id":44,"body":{"node":"3","param":1,"value":0.5}}',
        "hello_required", 44, False,
        "Before hello the session check comes before the body: hello_required, not "
        "invalid_field.", state="awaiting_hello")
neg_raw("neg.before_hello.invalid_envelope", "envelope",
        b'{"type":"command","name":"transport.play","id":10}', "invalid_envelope", 10, False,
        "Before hello an envelope fault is still invalid_envelope (step 7 comes before the "
        "session check).", state="awaiting_hello")
neg_raw("neg.already_established.bad_body", "session",
        b'{"type":"command","name":"hello","id":6,"body":{"protocol":"1"}}', "already_established",
        6, False, "A second hello is already_established whatever its body.")
neg_raw("neg.already_established.unknown_field", "session",
        b'{"type":"command","name":"hello","id":6,"body":{"protocol":1,"client":"a","x":1}}',
        "already_established", 6, False, "A second hello with an unknown field: already_established.")
TEMPO_HEAD = b'{"type":"command","name":"transport.tempo","id":13,"body":{"bpm":'
for tag, text in [("string", b'"120"'), ("null", b"null"), ("bool", b"true"), ("object", b"{}")]:
    neg_raw("neg.wrong_type.bpm_" + tag, "body", TEMPO_HEAD + text + b"}}", "invalid_field", 13, False,
            "bpm of the wrong JSON type (" + text.decode() + "): invalid_field, not out_of_range.")
for tag, text in [("string", b'"0.5"'), ("null", b"null"), ("bool", b"true"), ("array", b"[0.5]")]:
    neg_raw("neg.wrong_type.value_" + tag, "body", PARAM_HEAD + text + b"}}", "invalid_field", 42,
            False, "value of the wrong JSON type (" + text.decode() + "): invalid_field.")
neg_raw("neg.wrong_type.ramp_ms_string", "body", PARAM_HEAD + b'0.5,"ramp_ms":"5"}}', "invalid_field",
        42, False, "ramp_ms as a string: invalid_field.")
neg_raw("neg.wrong_type.ramp_ms_null", "body", PARAM_HEAD + b'0.5,"ramp_ms":null}}', "invalid_field",
        42, False, "null is not a value of any field, optional ones included: invalid_field "
        "(omit the field instead).")
neg_raw("neg.wrong_type.t_client_us_null", "body", PING_HEAD + b'{"nonce":1,"t_client_us":null}}',
        "invalid_field", 7, False, "An optional integer given as null: invalid_field.")
neg_raw("neg.invalid_field_before_out_of_range", "body",
        b'{"type":"command","name":"param.set","id":58,"body":{"node":4294967296,"param":1,"value":"x"}}',
        "invalid_field", 58, False,
        "node is out of range and value has the wrong type: invalid_field wins (errors.md "
        "section 2, step 10).")
neg_raw("neg.invalid_field_before_out_of_range.missing", "body",
        b'{"type":"command","name":"transport.tempo","id":59,"body":{"bpm":1000.0,"x":1}}',
        "invalid_field", 59, False, "bpm is out of range and x is unknown: invalid_field.")
SUB_HEAD = b'{"type":"command","name":"telemetry.subscribe","id":60,"body":'
for tag, body, error, why in [
    ("points_out_of_range", b'{"stream":"scope","rate_hz":30,"tap":0,"points":8}', "out_of_range",
     "scope points below 16"),
    ("points_too_many", b'{"stream":"scope","rate_hz":30,"tap":0,"points":1025}', "out_of_range",
     "scope points above 1024"),
    ("bins_not_power_of_two", b'{"stream":"spectrum","rate_hz":30,"tap":0,"bins":1000}',
     "out_of_range", "spectrum bins not a power of two"),
    ("bins_too_many", b'{"stream":"spectrum","rate_hz":30,"tap":0,"bins":8192}', "out_of_range",
     "spectrum bins above 4096"),
    ("analysis_rate", b'{"stream":"spectrum","rate_hz":61,"tap":0,"bins":1024}', "out_of_range",
     "rate_hz 61 for an analysis stream (1 to 60; 120 stays allowed for meters)"),
    ("scope_without_points", b'{"stream":"scope","rate_hz":30,"tap":0}', "invalid_field",
     "scope without points"),
    ("scope_without_tap", b'{"stream":"scope","rate_hz":30,"points":256}', "invalid_field",
     "scope without tap"),
    ("scope_with_bins", b'{"stream":"scope","rate_hz":30,"tap":0,"points":256,"bins":256}',
     "invalid_field", "scope with bins (a spectrum field)"),
    ("meters_with_tap", b'{"stream":"meters","rate_hz":30,"tap":0}', "invalid_field",
     "meters with tap (an analysis field)"),
    ("invalid_field_before_out_of_range", b'{"stream":"scope","rate_hz":30,"tap":0,"points":8,'
     b'"bins":16}', "invalid_field",
     "points out of range and bins unknown for scope: invalid_field wins"),
]:
    neg_raw("neg.subscribe." + tag, "body", SUB_HEAD + body + b"}", error, 60, False, why + ": " + error + ".")
negative("neg.subscribe.tap_out_of_range", "body",
         frame(SUB_HEAD + b'{"stream":"scope","rate_hz":30,"tap":2,"points":256}}'),
         json.loads(SUB_HEAD + b'{"stream":"scope","rate_hz":30,"tap":2,"points":256}}'),
         "out_of_range", 60, False,
         "tap 2 of an engine with welcome.taps = 2 (taps 0 and 1): out_of_range. JSON Schema "
         "cannot know the engine's taps.", taps=2)
neg_raw("neg.unsubscribe.meters_with_tap", "body",
        b'{"type":"command","name":"telemetry.unsubscribe","id":61,"body":{"stream":"meters","tap":0}}',
        "invalid_field", 61, False, "tap with one of the old streams: invalid_field.")
_att_ping = attachment_frame(PING, [])
negative("neg.bad_header.attachment_from_client", "frame", _att_ping, PING, "bad_header", None,
         False, "A client frame with the ATTACHMENT flag (and a well-formed json_len, no "
         "attachment): only the engine sends attachments, so bad_header, the frame is skipped.")
negative("neg.frame_too_large.before_hello", "frame", header(4097), None, "frame_too_large", None,
         True, "Before hello the engine accepts payloads of at most 4 096 bytes: a header declaring "
         "4 097 is fatal.", state="awaiting_hello", max_frame=MAX_FRAME, frame_limit=4096,
         partial=True)


# ---------------------------------------------------------------- output

def self_checks():
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names)), "duplicate vector names"
    ping = next(v for v in VECTORS if v["name"] == "command.ping")
    # framing.md section 6 shows these bytes; keep the two in step.
    assert ping["hex"].startswith("0000003a01000000" + b'{"type":"command'.hex()), ping["hex"]
    assert SCHEMA_BLIND <= set(names), SCHEMA_BLIND - set(names)
    for v in VECTORS:
        if v.get("same_as"):
            assert v["same_as"] in names, v["name"]


def render():
    self_checks()
    return json.dumps(VECTORS, indent=2, ensure_ascii=False) + "\n"


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print("vectors.json is out of date: run make_vectors.py", file=sys.stderr)
            return 1
        print(f"{len(VECTORS)} vectors checked")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"{len(VECTORS)} vectors written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the JSON Schemas (draft 2020-12) of loophole-ipc protocol version 1.

The tables below are the source; the *.schema.json files beside this script are the product.
Run `python3 make_schemas.py` to rewrite them, `python3 make_schemas.py --check` to fail when a
file on disk differs from what the tables produce.

Each schema is self-contained (no $ref to another file), so a client in any language can load one
file and validate one message. The normative text is ../envelope.md and ../errors.md.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:loophole-ipc:v1:"

U32_MAX = 4294967295
U16_MAX = 65535
SAFE_MAX = 9007199254740991  # 2^53 - 1: every integer of the protocol is at most this

BYTES_NOTE = (
    " The limit is in bytes of UTF-8; JSON Schema's maxLength counts code points, so the schema "
    "checks only a weaker bound (the same one for ASCII text)."
)


def u32(desc):
    return {"description": desc + " (u32).", "type": "integer", "minimum": 0, "maximum": U32_MAX}


def u16(desc, lo=0, hi=U16_MAX):
    return {"description": desc + " (u16).", "type": "integer", "minimum": lo, "maximum": hi}


def uint(desc):
    return {
        "description": desc + " (integer 0 … 2^53-1).",
        "type": "integer",
        "minimum": 0,
        "maximum": SAFE_MAX,
    }


def num(desc, lo=None, hi=None):
    s = {"description": desc, "type": "number"}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def boolean(desc):
    return {"description": desc, "type": "boolean"}


def string(desc, max_bytes=None, **extra):
    s = {"description": desc + (BYTES_NOTE if max_bytes else ""), "type": "string"}
    if max_bytes:
        s["maxLength"] = max_bytes
    s.update(extra)
    return s


def enum(desc, values):
    return {"description": desc, "type": "string", "enum": list(values)}


# Error codes of protocol version 1, in the order of ../errors.md. The schema of error/error lists
# them, and tests/spec_schemas.rs checks this list against the table in errors.md.
ERROR_CODES = [
    # framing
    "frame_too_large", "unsupported_encoding", "bad_header", "invalid_utf8",
    # envelope and body
    "invalid_json", "invalid_envelope", "unknown_type", "unknown_message", "invalid_field",
    "out_of_range",
    # session
    "hello_required", "already_established", "protocol_version", "bad_token", "session_busy",
    "handshake_timeout", "heartbeat_timeout", "slow_consumer", "shutting_down",
    # command results
    "unknown_node", "unknown_param", "node_exists", "unknown_kind", "unsupported",
    "control_unavailable", "audio_unavailable", "too_many_subscriptions", "internal",
]
CODE_PATTERN = "^[a-z][a-z0-9_]{0,31}$"

STREAMS = ["meters", "transport.state", "engine.health", "scope", "spectrum"]
BINS = [2**k for k in range(4, 13)]  # 16 … 4096


def const_stream(name):
    return {"properties": {"stream": {"const": name}}, "required": ["stream"]}


# envelope.md "Analysis streams": which of tap/points/bins each stream takes, and the lower rate
# limit of the analysis streams.
SUBSCRIBE_RULES = {"allOf": [
    {"if": const_stream("scope"),
     "then": {"required": ["tap", "points"], "not": {"required": ["bins"]},
              "properties": {"rate_hz": {"maximum": 60}}}},
    {"if": const_stream("spectrum"),
     "then": {"required": ["tap", "bins"], "not": {"required": ["points"]},
              "properties": {"rate_hz": {"maximum": 60}}}},
    {"if": {"properties": {"stream": {"enum": ["meters", "transport.state", "engine.health"]}}},
     "then": {"allOf": [{"not": {"required": [k]}} for k in ["tap", "points", "bins"]]}},
]}
UNSUBSCRIBE_RULES = {
    "if": {"properties": {"stream": {"enum": ["meters", "transport.state", "engine.health"]}}},
    "then": {"not": {"required": ["tap"]}},
}


def f32_array(desc, max_items):
    return {"description": desc, "type": "array", "maxItems": max_items, "items": {"type": "number"}}


ANALYSIS = {"scope": ["min", "max"], "spectrum": ["db"]}
ATTACHMENT = {
    "description": "Present exactly in frames with the ATTACHMENT flag (framing.md 3.1): the "
                   "attachment's format and length in bytes (payload length minus json_len).",
    "type": "object",
    "properties": {
        "format": {"const": "f32le"},
        "bytes": {"type": "integer", "minimum": 0, "maximum": U32_MAX},
    },
    "required": ["format", "bytes"],
}

# (type, name, direction, summary, body fields, required field names, extra body keywords)
# Body fields are in the order of envelope.md's tables, which is also the canonical key order.
CATALOGUE = [
    # ---- session ----
    ("command", "hello", "C→E, route net",
     "Opens the session. The first frame after the preface. Answered by `welcome`, or by `error` "
     "(protocol_version, bad_token, session_busy) after which the engine closes.",
     {
         "protocol": u16("Protocol version the client speaks; 1 for this document"),
         "client": string("Client name and version, for logs (e.g. `aura/0.1.0`), at most 64 bytes.", 64),
         "token": string("Session token, at most 128 bytes. Required when the engine was started "
                         "with a session token, otherwise optional and ignored.", 128),
         "attachments": boolean("True: the client can read binary attachments (framing.md 3.1). "
                                "Default false."),
     }, ["protocol", "client"], {}),
    ("reply", "welcome", "E→C",
     "Answer to `hello`: the session is established. Followed at once by one `transport.state` "
     "and one `engine.health` telemetry frame.",
     {
         "protocol": u16("Protocol version the engine speaks in this session"),
         "engine": string("Engine name and version (e.g. `signal/0.1.0`)."),
         "instance": string("Identity of the engine process: 16 lowercase hex digits, new for "
                            "every engine process. A different value after a reconnect means the "
                            "engine restarted and its state is new.", None, pattern="^[0-9a-f]{16}$"),
         "sample_rate": u32("Audio sample rate in Hz"),
         "block_size": u32("Audio block size in frames"),
         "max_frame": u32("Largest frame payload, in bytes, the engine accepts from now on"),
         "heartbeat_ms": u32("The client sends `ping` at least this often, in milliseconds"),
         "timeout_ms": u32("The engine ends the session after this many milliseconds without a frame from the client"),
         "attachments": boolean("True only when the client asked and the engine sends scope and "
                                "spectrum values as binary attachments in this session; absent (= false) from engines "
                                "older than analysis streams"),
         "taps": u16("Number of analysis taps; 0 = no analysis streams; absent (= 0) from engines "
                     "older than analysis streams"),
     },
     ["protocol", "engine", "instance", "sample_rate", "block_size", "max_frame",
      "heartbeat_ms", "timeout_ms"], {}),
    ("command", "ping", "C→E, route net (audio when `rt` is true)",
     "Liveness and round-trip probe; also the heartbeat. Answered by `pong`.",
     {
         "nonce": u32("Any value; echoed in `pong`"),
         "t_client_us": uint("Client timestamp in microseconds; echoed in `pong`"),
         "rt": boolean("When true the ping travels through the audio thread and `pong` carries "
                       "the engine sample clock. Default false."),
     }, ["nonce"], {}),
    ("reply", "pong", "E→C",
     "Answer to `ping`.",
     {
         "nonce": u32("The ping's nonce"),
         "t_client_us": uint("The ping's `t_client_us`; present only when the ping had one"),
         "t_engine_us": uint("Engine monotonic clock in microseconds when it answered"),
         "sample": uint("Engine sample clock when the audio thread saw the ping; present only when the ping had `rt` true"),
     }, ["nonce", "t_engine_us"], {}),
    ("command", "goodbye", "C→E, route net",
     "Ends the session. Answered by `ack`, then the engine closes the connection.",
     {}, [], {}),
    ("error", "goodbye", "E→C",
     "The engine ends the session on its own initiative; it closes the connection after this frame.",
     {
         "reason": enum("Why the session ends.", ["shutdown", "heartbeat_timeout", "slow_consumer"]),
     }, ["reason"], {}),
    # ---- transport ----
    ("command", "transport.play", "C→E, route audio", "Starts the transport. Answered by `ack` with `sample`.",
     {}, [], {}),
    ("command", "transport.stop", "C→E, route audio", "Stops the transport. Answered by `ack` with `sample`.",
     {}, [], {}),
    ("command", "transport.seek", "C→E, route audio", "Moves the transport. Answered by `ack` with `sample`.",
     {"sample": uint("New transport position in samples")}, ["sample"], {}),
    ("command", "transport.tempo", "C→E, route audio",
     "Sets the tempo. Answered by `ack` with `sample`, or `error` out_of_range.",
     {"bpm": num("Tempo in beats per minute, 20 … 999.", 20, 999)}, ["bpm"], {}),
    ("command", "transport.loop", "C→E, route audio",
     "Sets the loop. When `enabled`, `end` must be greater than `start`: the engine answers "
     "out_of_range otherwise (this rule spans two fields and is not expressed by the schema). "
     "Answered by `ack` with `sample`.",
     {
         "start": uint("Loop start, transport position in samples"),
         "end": uint("Loop end, transport position in samples"),
         "enabled": boolean("Whether the transport loops"),
     }, ["start", "end", "enabled"], {}),
    ("telemetry", "transport.state", "E→C",
     "Latest transport state (coalesced: each frame carries the state at sending time).",
     {
         "playing": boolean("Whether the transport is running"),
         "position": uint("Transport position in samples"),
         "bpm": num("Tempo in beats per minute"),
         "loop_start": uint("Loop start in samples"),
         "loop_end": uint("Loop end in samples"),
         "loop_enabled": boolean("Whether the loop is enabled"),
     }, ["playing", "position", "bpm", "loop_start", "loop_end", "loop_enabled"], {}),
    # ---- parameters ----
    ("command", "param.set", "C→E, route audio",
     "Sets a node parameter. Answered by `ack` with `sample`, or `error` (unknown_node, "
     "unknown_param, out_of_range).",
     {
         "node": u32("Node id"),
         "param": u32("Parameter index within the node"),
         "value": num("New value (finite; the node may impose its own range: out_of_range)."),
         "ramp_ms": num("Ramp time in milliseconds, 0 … 60000; default 0 (immediate).", 0, 60000),
     }, ["node", "param", "value"], {}),
    # ---- graph and engine ----
    ("command", "graph.add_node", "C→E, route control",
     "Adds a node. Answered by `ack`, or `error` (node_exists, unknown_kind, control_unavailable).",
     {
         "node": u32("Id of the new node, chosen by the client"),
         "kind": string("Node kind, e.g. `osc`, `gain`; at most 32 bytes.", 32),
     }, ["node", "kind"], {}),
    ("command", "graph.remove_node", "C→E, route control",
     "Removes a node and its connections. Answered by `ack`, or `error` unknown_node.",
     {"node": u32("Node id")}, ["node"], {}),
    ("command", "graph.connect", "C→E, route control",
     "Connects an output port to an input port. Answered by `ack` or `error`.",
     {
         "from": u32("Source node id"),
         "from_port": u16("Output port index on the source node"),
         "to": u32("Destination node id"),
         "to_port": u16("Input port index on the destination node"),
     }, ["from", "from_port", "to", "to_port"], {}),
    ("command", "graph.disconnect", "C→E, route control",
     "Removes a connection. Answered by `ack` or `error`.",
     {
         "from": u32("Source node id"),
         "from_port": u16("Output port index on the source node"),
         "to": u32("Destination node id"),
         "to_port": u16("Input port index on the destination node"),
     }, ["from", "from_port", "to", "to_port"], {}),
    ("command", "engine.shutdown", "C→E, route control",
     "Asks the engine to exit. Answered by `ack`; then the engine sends `goodbye` (reason "
     "shutdown) and exits.",
     {}, [], {}),
    # ---- telemetry ----
    ("command", "telemetry.subscribe", "C→E, route net",
     "Subscribes this session to a telemetry stream (subscriptions end with the session). "
     "Subscribing again changes the rate (for scope and spectrum: the key is stream and tap, "
     "and points/bins are replaced too). Answered by `ack`, or `error` too_many_subscriptions "
     "(a 9th scope/spectrum key), out_of_range (also tap >= welcome.taps, which the schema "
     "cannot know).",
     {
         "stream": enum("The telemetry stream.", STREAMS),
         "rate_hz": u16("Frames per second, 1 … 120 (1 … 60 for scope and spectrum)", 1, 120),
         "tap": u16("scope/spectrum only (required there): the analysis tap, below welcome.taps"),
         "points": u16("scope only (required there): points, 16 … 1024", 16, 1024),
         "bins": dict(u16("spectrum only (required there): bins, a power of two 16 … 4096", 16,
                          4096), enum=BINS),
     }, ["stream", "rate_hz"], SUBSCRIBE_RULES),
    ("command", "telemetry.unsubscribe", "C→E, route net",
     "Ends a subscription (also when there is none). Answered by `ack`.",
     {"stream": enum("The telemetry stream.", STREAMS),
      "tap": u16("scope/spectrum only: that tap; absent, every tap of the stream")},
     ["stream"], UNSUBSCRIBE_RULES),
    ("telemetry", "scope", "E→C",
     "The latest window of an analysis tap, decimated to `points` min/max pairs. Without an "
     "attachment the body carries `min` and `max` (each `points` long, not expressed by the "
     "schema); with one, they are absent and the attachment holds min[0..n] then max[0..n].",
     {
         "tap": u16("The analysis tap"),
         "points": u16("Points (n), 16 … 1024", 16, 1024),
         "samples_per_point": {**u32("Samples each point covers"), "minimum": 1},
         "sample": uint("Engine sample clock of the window's last sample"),
         "missed": uint("Samples the engine's reader lost since the previous frame"),
         "min": f32_array("Minimum of the samples of each point", 1024),
         "max": f32_array("Maximum of the samples of each point", 1024),
     }, ["tap", "points", "samples_per_point", "sample", "missed"], {}),
    ("telemetry", "spectrum", "E→C",
     "Magnitude in dBFS per linear bin (bin k centred at k × sample_rate / (2 × bins) Hz: the "
     "client computes the bin width) of a Hann-windowed FFT (always Hann, so not sent) of an "
     "analysis tap; a full-scale sine at a bin centre reads 0 dB; floor -160 dB. Without "
     "an attachment the body carries `db` (`bins` long); with one it is absent and the "
     "attachment holds the n values.",
     {
         "tap": u16("The analysis tap"),
         "bins": dict(u16("Bins (n), a power of two 16 … 4096", 16, 4096), enum=BINS),
         "sample_rate": u32("Sample rate in Hz"),
         "sample": uint("Engine sample clock of the window's last sample"),
         "missed": uint("Samples the engine's reader lost since the previous frame"),
         "db": {"description": "dBFS per bin, at least -160", "type": "array", "maxItems": 4096,
                "items": {"type": "number", "minimum": -160}},
     }, ["tap", "bins", "sample_rate", "sample", "missed"], {}),
    ("telemetry", "meters", "E→C",
     "Peak and RMS per channel over the whole interval since the previous `meters` frame, so no "
     "peak is missed. `rms` has the same length as `peak` (not expressed by the schema).",
     {
         "peak": {"description": "Peak linear amplitude per channel (≥ 0), at most 512 channels.",
                  "type": "array", "maxItems": 512, "items": {"type": "number", "minimum": 0}},
         "rms": {"description": "RMS linear amplitude per channel (≥ 0), same length as `peak`.",
                 "type": "array", "maxItems": 512, "items": {"type": "number", "minimum": 0}},
     }, ["peak", "rms"], {}),
    ("telemetry", "engine.health", "E→C",
     "Engine health counters.",
     {
         "callbacks": uint("Audio callbacks since the engine started"),
         "xruns": uint("Audio callbacks that missed their deadline since the engine started"),
         "dsp_load": num("Largest fraction of the block period spent in the callback during the "
                         "last interval; above 1 means an overrun.", 0),
         "cmd_queue_len": u32("Commands waiting for the audio thread now"),
         "cmd_queue_capacity": u32("Capacity of the audio command queue"),
         "cmd_queue_high": u32("High-water mark of the audio command queue"),
         "reply_queue_high": u32("High-water mark of the audio reply queue"),
         "telemetry_dropped": uint("Telemetry updates dropped on the audio side"),
         "telemetry_shed": uint("Telemetry frames not sent to a slow client"),
     },
     ["callbacks", "xruns", "dsp_load", "cmd_queue_len", "cmd_queue_capacity", "cmd_queue_high",
      "reply_queue_high", "telemetry_dropped", "telemetry_shed"], {}),
    # ---- replies and diagnostics ----
    ("reply", "ack", "E→C",
     "The command took effect.",
     {"sample": uint("Engine sample clock at which the command took effect; present for "
                     "audio-route commands only")}, [], {}),
    ("error", "error", "E→C",
     "A frame or command failed. `ref` is present when the failed frame was a command whose `id` "
     "could be read. See errors.md for each code and whether the connection stays open.",
     {
         "code": {
             "description": "Stable machine-readable code (see errors.md). The first branch lists "
                            "the codes of protocol version 1; the second accepts codes an engine "
                            "may add later, which a client must treat as a generic failure of the "
                            "referenced command.",
             "type": "string",
             "anyOf": [
                 {"title": "known code (protocol version 1)", "type": "string", "enum": ERROR_CODES},
                 {"title": "code added later", "type": "string", "pattern": CODE_PATTERN},
             ],
         },
         "message": string("Explanation for people; may change between engine versions, never parse "
                           "it. At most 128 bytes.", 128),
     }, ["code", "message"], {}),
    ("error", "log", "E→C",
     "A diagnostic line from the engine; no action required.",
     {
         "level": enum("Severity.", ["debug", "info", "warn", "error"]),
         "message": string("Text for people, at most 128 bytes.", 128),
     }, ["level", "message"], {}),
]

ID = {
    "description": "Request id chosen by the client, 0 … 4294967295 (u32); echoed in the answer's `ref`.",
    "type": "integer", "minimum": 0, "maximum": U32_MAX,
}
REF = {
    "description": "The `id` of the command this frame answers (u32).",
    "type": "integer", "minimum": 0, "maximum": U32_MAX,
}
INTEGER_NOTE = (
    " Integers must be written without fraction or exponent (`7`, not `7.0`); JSON Schema "
    "cannot see the difference; the engine rejects `7.0` where an integer is due."
)


def message_schema(mtype, name, direction, summary, fields, required, extra):
    strict = mtype == "command"
    body = {"description": "", "type": "object"}
    if fields:
        body["properties"] = fields
    if required:
        body["required"] = required
    if strict:
        body["additionalProperties"] = False
        body["description"] = ("Command body: checked strictly by the engine (a missing, mistyped "
                               "or unknown field is invalid_field; a value out of range is "
                               "out_of_range)." + INTEGER_NOTE)
    else:
        body["description"] = ("Sent by the engine: a client must ignore fields it does not know "
                               "(the engine may add optional fields within version 1).")
    body.update(extra)

    props = {
        "type": {"const": mtype},
        "name": {"const": name},
    }
    req = ["type", "name"]
    if mtype == "command":
        props["id"] = ID
        req.append("id")
    elif mtype == "reply":
        props["ref"] = REF
        req.append("ref")
    elif mtype == "error":
        props["ref"] = dict(REF, description=REF["description"] +
                            " Present only when the frame answers a command whose id could be read.")
    if name in ANALYSIS:
        props["attachment"] = ATTACHMENT
    props["body"] = body
    req.append("body")
    top = {}
    if name in ANALYSIS:
        arrays = ANALYSIS[name]
        top["if"] = {"required": ["attachment"]}
        top["then"] = {"properties": {"body": {"allOf": [{"not": {"required": [a]}} for a in arrays]}}}
        top["else"] = {"properties": {"body": {"required": arrays}}}
    return dict({
        "$schema": DRAFT,
        "$id": f"{ID_PREFIX}{mtype}.{name}",
        "title": f"{mtype} {name}",
        "description": f"{summary} Direction: {direction}. The whole envelope; unknown envelope "
                       "keys are ignored by both sides. Normative text: envelope.md.",
        "type": "object",
        "properties": props,
        "required": req,
    }, **top)


def envelope_schema():
    return {
        "$schema": DRAFT,
        "$id": f"{ID_PREFIX}envelope",
        "title": "envelope",
        "description": "The envelope every frame payload carries (envelope.md). Checks the "
                       "envelope only; the per-message schemas <type>.<name>.schema.json check "
                       "the body. Unknown envelope keys are ignored." + INTEGER_NOTE,
        "type": "object",
        "properties": {
            "type": {"description": "Logical channel.", "enum": ["command", "reply", "telemetry", "error"]},
            "name": {"description": "Message name: 1-32 bytes of a-z, 0-9, '.', '_'.",
                     "type": "string", "pattern": "^[a-z0-9._]{1,32}$"},
            "id": ID,
            "ref": REF,
            "body": {"description": "The message's fields; `{}` when it has none.", "type": "object"},
            "attachment": ATTACHMENT,
        },
        "required": ["type", "name", "body"],
        "allOf": [
            {"if": {"properties": {"type": {"const": "command"}}},
             "then": {"properties": {"id": ID}, "required": ["id"]}},
            {"if": {"properties": {"type": {"const": "reply"}}},
             "then": {"properties": {"ref": REF}, "required": ["ref"]}},
        ],
    }


def render(schema):
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def products():
    out = {"envelope.schema.json": render(envelope_schema())}
    for entry in CATALOGUE:
        out[f"{entry[0]}.{entry[1]}.schema.json"] = render(message_schema(*entry))
    return out


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    files = products()
    for fname, text in files.items():
        path = HERE / fname
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(fname)
        else:
            path.write_text(text, encoding="utf-8")
    extra = sorted(p.name for p in HERE.glob("*.schema.json") if p.name not in files)
    if extra:
        print("schema files not produced by this script:", ", ".join(extra), file=sys.stderr)
        return 1
    if stale:
        print("out of date (run make_schemas.py):", ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(files)} schemas {'checked' if check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Section of scripts/test: the Wireshark dissector (tools/wireshark/loophole_ipc.lua), tested
# with tshark on a real loopback capture of the example engine and client, and on synthetic
# pcaps (a frame split across segments, several frames per segment, an HTTP peer, bad headers).
# Every check has a negative control: the same check without the dissector loaded must fail.
# Skipped, loudly, only when tshark cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

LUA=tools/wireshark/loophole_ipc.lua
TOOLS=tools/wireshark
T0=$SECONDS

step "wireshark: tshark"
if ! command -v tshark >/dev/null 2>&1; then
  # wireshark-common asks whether non-root users may capture: answer no, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" |
    debconf-set-selections 2>/dev/null || true
  need_apt tshark tshark || true
fi
if ! command -v tshark >/dev/null 2>&1; then
  printf '\n%s\n%s\n%s\n\n' \
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" \
    "!!! SKIPPED: tshark could not be installed: the Wireshark dissector is UNTESTED !!!" \
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 0
fi
tshark --version 2>/dev/null | head -1

WORK=$(mktemp -d)
SIG_PID=
DC_PID=
cleanup() {
  [ -n "$DC_PID" ] && kill "$DC_PID" 2>/dev/null || true
  [ -n "$SIG_PID" ] && kill "$SIG_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# frames FILE [tshark options...]: one JSON line per preface/frame the dissector reports,
# plus per-direction byte totals (see pdml_frames.py). Two passes (-2): "answered in" links.
frames() {
  local file=$1
  shift
  tshark -2 -n "$@" -r "$file" -T pdml 2>/dev/null | python3 "$TOOLS/pdml_frames.py"
}
with_lua=(-X "lua_script:$LUA")

# ---------------------------------------------------------------------------------------------
step "wireshark: capture a real session on loopback"
cargo build -q --examples
BIN=target/debug/examples
# No session token: unset it so aura --connect and the engine agree.
# The engine's frame log is the second, independent record of the session.
env -u LOOPHOLE_SESSION_TOKEN "$BIN/signal" --no-rt --log-frames "$WORK/frames.jsonl" \
  >"$WORK/signal.out" 2>"$WORK/signal.err" &
SIG_PID=$!
for _ in $(seq 100); do
  grep -q '^LOOPHOLE_LISTEN ' "$WORK/signal.out" && break
  sleep 0.1
done
PORT=$(sed -n 's/^LOOPHOLE_LISTEN .*"port":\([0-9]*\).*/\1/p' "$WORK/signal.out")
[ -n "$PORT" ] || fail "signal did not announce a port: $(cat "$WORK/signal.err")"
# Bounded: dumpcap stops by itself after 60 s if the test hangs; normally it is stopped below.
dumpcap -q -i lo -f "tcp port $PORT" -w "$WORK/real.pcapng" -a duration:60 2>"$WORK/dumpcap.err" &
DC_PID=$!
for _ in $(seq 100); do
  grep -q "Capturing on" "$WORK/dumpcap.err" && break
  sleep 0.1
done
grep -q "Capturing on" "$WORK/dumpcap.err" || fail "dumpcap did not start: $(cat "$WORK/dumpcap.err")"
sleep 0.5 # the capture filter is installed after the message
aura() { env -u LOOPHOLE_SESSION_TOKEN timeout 20 "$BIN/aura" --json --connect "127.0.0.1:$PORT" "$@"; }
aura send ping '{"nonce":5}' >"$WORK/aura.jsonl"
aura send param.set '{"node":99,"param":0,"value":1}' >>"$WORK/aura.jsonl" || true # unknown_node
aura watch --count 6 >>"$WORK/aura.jsonl"
# A non-protocol peer (HTTP) and a lying length on the real engine.
python3 - "$PORT" <<'EOF'
import socket, struct, sys, time
port = int(sys.argv[1])
def talk(data):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(5)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        pass
    s.close()
    return got
assert talk(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == b"", "engine answered HTTP"
pre = bytes([0x89, 0x4C, 0x50, 0x48, 0x0D, 0x0A, 0x1A, 0x0A])
got = talk(pre + struct.pack(">IBBH", 0x7FFFFFF0, 1, 0, 0) + b'{"type":')
assert b"frame_too_large" in got, got
EOF
sleep 0.5
kill -INT "$DC_PID"
wait "$DC_PID" || true
DC_PID=
kill "$SIG_PID" # SIGTERM: a clean shutdown, which completes the frame log
wait "$SIG_PID" || true
SIG_PID=

# check_log FILE.jsonl: per connection and direction, the dissector's prefaces and frames
# (type, name, id, ref, length) are exactly those of the engine's frame log, in order.
check_log() {
  python3 - "$1" "$WORK/frames.jsonl" "$PORT" <<'EOF'
import json, sys
frames = [json.loads(l) for l in open(sys.argv[1])]
log = [json.loads(l) for l in open(sys.argv[2])]
port = int(sys.argv[3])
def item(kind, d):
    return (kind, d.get("type"), d.get("name"), d.get("id"), d.get("ref"),
            d.get("len", d.get("length")))
# The capture: streams with payload, in order; direction from the engine's port.
cap = {}
for f in frames:
    if f["kind"] == "bytes":
        cap.setdefault(f["stream"], {"in": [], "out": []})
for f in frames:
    if f["kind"] in ("preface", "frame"):
        d = "out" if f["src"] == port else "in"
        cap.setdefault(f["stream"], {"in": [], "out": []})[d].append(item(f["kind"], f))
# The log: connections in order of appearance.
logged = {}
for l in log:
    if "conn" not in l:
        continue
    c = logged.setdefault(l["conn"], {"in": [], "out": []})
    if l.get("event") == "preface":
        c[l["dir"]].append(("preface",) + (None,) * 5)
    elif "len" in l and l.get("event") in (None, "oversize"):
        c[l["dir"]].append(item("frame", l))
a = [cap[k] for k in sorted(cap)]
b = list(logged.values())
problems = []
if len(a) != len(b):
    problems.append(f"{len(a)} connections captured, {len(b)} in the frame log")
for i, (x, y) in enumerate(zip(a, b)):
    for d in ("in", "out"):
        if x[d] != y[d]:
            problems.append(f"connection {i} {d}: capture {x[d]} != log {y[d]}")
n = sum(len(c[d]) for c in b for d in c)
if n < 30:
    problems.append(f"only {n} items in the frame log")
for p in problems:
    print("  -", p)
sys.exit(1 if problems else 0)
EOF
}

# check_real FILE.jsonl: the dissector's view of the real capture against aura's record.
check_real() {
  python3 - "$1" "$WORK/aura.jsonl" "$PORT" <<'EOF'
import json, sys
frames = [json.loads(l) for l in open(sys.argv[1])]
aura = [json.loads(l) for l in open(sys.argv[2])]
port = int(sys.argv[3])
problems = []
# Every byte of every direction of every Loophole connection (a preface seen) was dissected.
byte_rows = [f for f in frames if f["kind"] == "bytes"]
loophole = {f["stream"] for f in frames if f["kind"] == "preface"}
if len(loophole) < 4:
    problems.append(f"{len(loophole)} Loophole connections found, not 3 (aura) and 1 (the liar)")
for b in byte_rows:
    if b["stream"] in loophole and b["tcp"] != b["dissected"]:
        problems.append(f"stream {b['stream']} from {b['src']}: {b['tcp']} bytes on the wire, "
                        f"{b['dissected']} dissected")
fr = [f for f in frames if f["kind"] == "frame"]
cmds = [f for f in fr if f["dst"] == port]
answers = [f for f in fr if f["src"] == port]
if not all(f["type"] in ("command", None) for f in cmds):
    problems.append("a client frame that is not a command")
# Every command aura reports answered: a command frame with that name and id, and an answer
# frame with ref = id that points back at it (request_in) with a response time.
for e in aura:
    if e["event"] not in ("ack", "answer"):
        continue
    c = [f for f in cmds if f["name"] == e["name"] and f["id"] == e["id"]]
    if not c:
        problems.append(f"aura's {e['name']} id={e['id']} is not in the capture")
        continue
    a = [f for f in answers if f["ref"] == e["id"] and f["request_in"] == c[-1]["packet"]
         and f["stream"] == c[-1]["stream"] and f["time"] is not None]
    if not a:
        problems.append(f"no answer to {e['name']} id={e['id']} linked to its command")
    elif e["event"] == "answer" and not e["ok"] and a[-1]["type"] != "error":
        problems.append(f"{e['name']} id={e['id']} failed but its answer is {a[-1]['type']}")
# Every telemetry frame aura printed was captured, in order.
seen = [f["name"] for f in answers if f["type"] == "telemetry"]
want = [e["telemetry"]["name"] for e in aura if e["event"] == "telemetry"]
it = iter(seen)
if not want or not all(any(n == w for n in it) for w in want):
    problems.append(f"aura's telemetry {want} is not a subsequence of the captured {seen}")
# The unknown node is an error frame with its code; the HTTP connection has no Loophole
# frame; the lying length has the expert warning and the engine's frame_too_large answer.
if not any(f["error_code"] == "unknown_node" and f["type"] == "error" for f in answers):
    problems.append("no error frame with code unknown_node")
streams = sorted({b["stream"] for b in byte_rows})
found = {f["stream"] for f in frames if f["kind"] != "bytes"}
if len(streams) < 2 or streams[-2] in found:
    problems.append(f"the HTTP connection (stream {streams[-2] if len(streams) > 1 else '?'}) "
                    "shows Loophole frames")
if not any("exceeds max_frame" in " ".join(f["experts"]) for f in cmds):
    problems.append("no expert warning for the lying length")
if not any(f["error_code"] == "frame_too_large" for f in answers):
    problems.append("no frame_too_large error frame")
for p in problems:
    print("  -", p)
sys.exit(1 if problems else 0)
EOF
}

frames "$WORK/real.pcapng" "${with_lua[@]}" >"$WORK/real.jsonl"
check_real "$WORK/real.jsonl" || fail "the dissector's view of the real capture (above)"
check_log "$WORK/real.jsonl" || fail "the dissector's view differs from the engine's frame log (above)"
echo "ok: every frame of $(grep -c '"frame"' "$WORK/real.jsonl") in the real capture decoded, matching aura's record and the frame log"
step "wireshark negative control: the same check without the dissector"
frames "$WORK/real.pcapng" >"$WORK/real-bare.jsonl"
if check_real "$WORK/real-bare.jsonl" >/dev/null; then
  fail "the real-capture check passes without the dissector: it proves nothing"
fi
if check_log "$WORK/real-bare.jsonl" >/dev/null; then
  fail "the frame-log comparison passes without the dissector: it proves nothing"
fi
echo "ok: fails without the dissector"

# ---------------------------------------------------------------------------------------------
step "wireshark: synthetic captures (split frame, several frames per segment, HTTP, bad headers)"
python3 "$TOOLS/synth_pcap.py" "$WORK" 45678
# check_synth SPLIT.jsonl HTTP.jsonl BAD.jsonl
check_synth() {
  python3 - "$@" <<'EOF'
import json, sys
split, http, bad = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
problems = []
def rows(fs):
    return [(f["packet"], f["type"], f["name"], f["id"], f["ref"], f["error_code"], f["request_in"])
            for f in fs if f["kind"] == "frame"]
want = [
    (4, "command", "hello", 1, None, None, None),
    (7, "command", "ping", 2, None, None, None),  # 3 segments, the header split: packets 5-7
    (8, "reply", "welcome", None, 1, None, 4),    # 4 frames (and the preface) in packet 8
    (8, "telemetry", "transport.state", None, None, None, None),
    (8, "telemetry", "engine.health", None, None, None, None),
    (8, "reply", "pong", None, 2, None, 7),
    (9, "command", "param.set", 3, None, None, None),
    (9, "command", "graph.remove_node", 4, None, None, None),
    (10, "reply", "ack", None, 3, None, 9),
    (10, "error", "error", None, 4, "unknown_node", 9),
]
if rows(split) != want:
    problems.append(f"split.pcap decoded as {rows(split)}")
if [f["packet"] for f in split if f["kind"] == "preface"] != [4, 8]:
    problems.append("split.pcap: the two prefaces were not found in packets 4 and 8")
if [f for f in http if f["kind"] != "bytes"]:
    problems.append("http.pcap: an HTTP request shows Loophole frames")
experts = {f["packet"]: " ".join(f["experts"]) for f in bad if f["kind"] == "frame"}
for packet, text in ((5, "Unknown encoding"), (6, "Non-zero flags"), (7, "Non-zero reserved"),
                     (8, "exceeds max_frame")):
    if text not in experts.get(packet, ""):
        problems.append(f"bad.pcap packet {packet}: no expert warning '{text}'")
if experts.get(4, "x") != "":
    problems.append("bad.pcap: a warning on the good hello")
for p in problems:
    print("  -", p)
sys.exit(1 if problems else 0)
EOF
}
for f in split http bad; do frames "$WORK/$f.pcap" "${with_lua[@]}" >"$WORK/$f.jsonl"; done
check_synth "$WORK/split.jsonl" "$WORK/http.jsonl" "$WORK/bad.jsonl" ||
  fail "the dissector on the synthetic captures (above)"
echo "ok: split frame, 4 frames in one segment, no false frame on HTTP, warnings on bad headers"

step "wireshark negative controls: without the dissector; HTTP forced to Loophole"
for f in split http bad; do frames "$WORK/$f.pcap" >"$WORK/$f-bare.jsonl"; done
if check_synth "$WORK/split-bare.jsonl" "$WORK/http.jsonl" "$WORK/bad.jsonl" >/dev/null; then
  fail "the split/multi-frame check passes without the dissector"
fi
if check_synth "$WORK/split.jsonl" "$WORK/http.jsonl" "$WORK/bad-bare.jsonl" >/dev/null; then
  fail "the bad-header check passes without the dissector"
fi
# The HTTP check can fail: forcing the port to Loophole (Decode As) makes frames of it.
frames "$WORK/http.pcap" "${with_lua[@]}" -d tcp.port==45678,loophole >"$WORK/http-forced.jsonl"
if check_synth "$WORK/split.jsonl" "$WORK/http-forced.jsonl" "$WORK/bad.jsonl" >/dev/null; then
  fail "the HTTP check passes with the HTTP stream decoded as Loophole"
fi
echo "ok: each check fails without the dissector (and the HTTP one when forced)"

echo "wireshark section: $((SECONDS - T0)) s"

#!/usr/bin/env python3
"""Writes pcap files of synthetic TCP streams on loopback, to test the Loophole dissector on
cases a real session rarely shows: a frame split across segments, several frames in one
segment, a non-protocol peer (HTTP) on the engine port, and bad headers (a lying length,
unknown encoding, non-zero flags and reserved).

Usage: synth_pcap.py OUTDIR PORT
Writes OUTDIR/split.pcap, OUTDIR/http.pcap, OUTDIR/bad.pcap. Standard library only.
Each TCP stream gets a proper three-way handshake, sequence and acknowledgement numbers and
IPv4 checksums (TCP checksums are left 0; Wireshark does not verify them by default).
"""
import json
import struct
import sys

PREFACE = bytes([0x89, 0x4C, 0x50, 0x48, 0x0D, 0x0A, 0x1A, 0x0A])
CLIENT_IP, SERVER_IP = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def frame(obj, encoding=1, flags=0, reserved=0, length=None):
    """One Loophole frame; `length` overrides the header's length field (a lying length)."""
    payload = json.dumps(obj, separators=(",", ":")).encode() if isinstance(obj, dict) else obj
    n = len(payload) if length is None else length
    return struct.pack(">IBBH", n, encoding, flags, reserved) + payload


def ip_checksum(header):
    s = sum(struct.unpack(">10H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class Stream:
    """A TCP connection client:cport <-> server:sport, written as Ethernet/IPv4 records."""

    def __init__(self, out, cport, sport, t0):
        self.out, self.cport, self.sport, self.t = out, cport, sport, t0
        self.seq = {"c": 1000, "s": 5000}
        self.ipid = 1

    def _packet(self, side, flags, data=b""):
        src, dst = (self.cport, self.sport) if side == "c" else (self.sport, self.cport)
        other = "s" if side == "c" else "c"
        tcp = struct.pack(">HHIIBBHHH", src, dst, self.seq[side], self.seq[other],
                          5 << 4, flags, 65535, 0, 0)
        total = 20 + len(tcp) + len(data)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, self.ipid, 0x4000, 64, 6, 0,
                         CLIENT_IP, SERVER_IP)
        ip = ip[:10] + struct.pack(">H", ip_checksum(ip)) + ip[12:]
        self.ipid += 1
        eth = b"\x00" * 12 + b"\x08\x00"
        pkt = eth + ip + tcp + data
        self.t += 0.001
        sec, usec = int(self.t), int(round((self.t - int(self.t)) * 1e6))
        self.out.write(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)) + pkt)
        self.seq[side] += len(data) + (1 if flags & (SYN | FIN) else 0)

    def handshake(self):
        self._packet("c", SYN)
        self._packet("s", SYN | ACK)
        self._packet("c", ACK)

    def send(self, side, data):
        """One TCP segment with `data` from side 'c' (client) or 's' (server)."""
        self._packet(side, PSH | ACK, data)

    def close(self):
        self._packet("c", FIN | ACK)
        self._packet("s", FIN | ACK)
        self._packet("c", ACK)


def pcap(path):
    f = open(path, "wb")
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return f


def env(type_, name, body=None, **kw):
    d = {"type": type_, "name": name}
    d.update(kw)
    d["body"] = body if body is not None else {}
    return d


def write_split(path, port):
    """preface+hello in one segment; a ping split across three segments (the header itself
    split); the server's preface, welcome, two telemetry frames and the pong in ONE segment;
    then a param.set and a ping in one segment, answered by an ack and an error in one."""
    with pcap(path) as f:
        s = Stream(f, 40001, port, 1_700_000_000.0)
        s.handshake()
        s.send("c", PREFACE + frame(env("command", "hello", {"protocol": 1, "client": "synth"}, id=1)))
        ping = frame(env("command", "ping", {"nonce": 9}, id=2))
        s.send("c", ping[:3])
        s.send("c", ping[3:20])
        s.send("c", ping[20:])
        s.send("s", PREFACE
               + frame(env("reply", "welcome", {"protocol": 1, "max_frame": 65536}, ref=1))
               + frame(env("telemetry", "transport.state", {"playing": False}))
               + frame(env("telemetry", "engine.health", {"xruns": 0}))
               + frame(env("reply", "pong", {"nonce": 9}, ref=2)))
        s.send("c", frame(env("command", "param.set", {"node": 3, "param": 1, "value": 0.5}, id=3))
               + frame(env("command", "graph.remove_node", {"node": 77}, id=4)))
        s.send("s", frame(env("reply", "ack", {"sample": 4800}, ref=3))
               + frame(env("error", "error", {"code": "unknown_node", "message": "node 77"}, ref=4)))
        s.close()


def write_http(path, port):
    """An HTTP client on the engine port: the engine closes at byte 0 and sends nothing."""
    with pcap(path) as f:
        s = Stream(f, 40002, port, 1_700_000_100.0)
        s.handshake()
        s.send("c", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n")
        s.close()


def write_bad(path, port):
    """Bad headers after a good preface: unknown encoding, non-zero flags, non-zero reserved
    (each skipped by the engine, which answers an error), then a lying length (fatal)."""
    with pcap(path) as f:
        s = Stream(f, 40003, port, 1_700_000_200.0)
        s.handshake()
        s.send("c", PREFACE + frame(env("command", "hello", {"protocol": 1, "client": "synth"}, id=1)))
        s.send("c", frame(b"\x01\x02\x03", encoding=2))
        s.send("c", frame(env("command", "ping", {"nonce": 1}, id=5), flags=0x80))
        s.send("c", frame(env("command", "ping", {"nonce": 2}, id=6), reserved=0x0102))
        s.send("c", frame(b'{"type":"command"', length=0x7FFFFFF0))
        s.close()


def main():
    outdir, port = sys.argv[1], int(sys.argv[2])
    write_split(f"{outdir}/split.pcap", port)
    write_http(f"{outdir}/http.pcap", port)
    write_bad(f"{outdir}/bad.pcap", port)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads tshark's PDML (`tshark -T pdml ...`) on stdin and prints what the Loophole dissector
found, one JSON object per line, for scripts/test.d/50-wireshark.sh:

  {"packet":N,"stream":S,"src":PORT,"dst":PORT,"kind":"preface"}
  {"packet":N,"stream":S,"src":PORT,"dst":PORT,"kind":"frame","length":L,"type":T,"name":M,
   "id":I,"ref":R,"error_code":C,"request_in":F,"time":SECONDS,"experts":[...]}
  {"kind":"bytes","stream":S,"src":PORT,"tcp":B,"dissected":D}   (one per stream direction)

"bytes" compares the TCP payload bytes of each direction with the bytes the dissector
accounted for (prefaces, headers, payloads): equal when every byte on the wire was dissected.
Standard library only.
"""
import json
import sys
import xml.etree.ElementTree as ET


def fields(elem):
    """Every <field> below elem (depth first)."""
    for f in elem.iter("field"):
        yield f


def first(elem, name):
    for f in fields(elem):
        if f.get("name") == name:
            return f.get("show")
    return None


def main():
    tree = ET.parse(sys.stdin)
    tcp_bytes, dissected = {}, {}
    for packet in tree.getroot().iter("packet"):
        number = stream = src = dst = None
        for proto in packet.findall("proto"):
            name = proto.get("name")
            if name == "frame":
                number = int(first(proto, "frame.number"))
            elif name == "tcp":
                stream = int(first(proto, "tcp.stream"))
                src, dst = int(first(proto, "tcp.srcport")), int(first(proto, "tcp.dstport"))
                key = (stream, src)
                tcp_bytes[key] = tcp_bytes.get(key, 0) + int(first(proto, "tcp.len") or 0)
            elif name == "loophole":
                out = {"packet": number, "stream": stream, "src": src, "dst": dst}
                key = (stream, src)
                if first(proto, "loophole.preface") is not None:
                    out["kind"] = "preface"
                    dissected[key] = dissected.get(key, 0) + 8
                else:
                    out["kind"] = "frame"
                    size = int(proto.get("size"))
                    dissected[key] = dissected.get(key, 0) + size
                    for k in ("length", "id", "ref", "request_in"):
                        v = first(proto, "loophole." + k)
                        out[k] = None if v is None else int(v)
                    for k in ("type", "name", "error_code"):
                        out[k] = first(proto, "loophole." + k)
                    t = first(proto, "loophole.time")
                    out["time"] = None if t is None else float(t)
                    out["experts"] = [f.get("show") for f in fields(proto)
                                      if f.get("name") == "_ws.expert.message"]
                print(json.dumps(out, sort_keys=True))
    for (stream, src), n in sorted(tcp_bytes.items()):
        if n:
            print(json.dumps({"kind": "bytes", "stream": stream, "src": src, "tcp": n,
                              "dissected": dissected.get((stream, src), 0)}, sort_keys=True))


if __name__ == "__main__":
    main()

//! The engine's frame log (`ServerBuilder::frame_log`) against what a raw client put on and
//! took off the wire: the same frames, in order, with the same headers and payloads, and the
//! events around them (prefaces, close). The comparison has negative controls (a frame missing,
//! two swapped), and the size bound is checked against an unbounded log of the same session.

mod net_support;

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use loophole_ipc::frame::PREFACE;
use loophole_ipc::message::{Ping, Play, PROTOCOL_VERSION};
use loophole_ipc::net::FrameLogConfig;
use net_support::*;
use serde_json::Value;

/// One frame as seen on the wire: header fields and payload.
#[derive(Clone, Debug, PartialEq)]
struct WireFrame {
    len: u32,
    encoding: u8,
    flags: u8,
    reserved: u16,
    payload: Vec<u8>,
}

/// Splits one direction's bytes into preface and frames (the test's own reading of the wire).
fn split(bytes: &[u8]) -> Vec<WireFrame> {
    assert_eq!(&bytes[..8], &PREFACE, "starts with the preface");
    let mut rest = &bytes[8..];
    let mut out = Vec::new();
    while rest.len() >= 8 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let end = 8 + len as usize;
        out.push(WireFrame {
            len,
            encoding: rest[4],
            flags: rest[5],
            reserved: u16::from_be_bytes([rest[6], rest[7]]),
            payload: rest[8..end].to_vec(),
        });
        rest = &rest[end..];
    }
    assert!(rest.is_empty(), "no partial frame left");
    out
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Checks that the log's frames of direction `dir` are exactly `wire`, in order.
fn same_frames(log: &[Value], dir: &str, wire: &[WireFrame]) -> Result<(), String> {
    let logged: Vec<&Value> = log
        .iter()
        .filter(|l| l["dir"] == dir && l.get("len").is_some() && l.get("event").is_none())
        .collect();
    if logged.len() != wire.len() {
        return Err(format!(
            "{dir}: {} frames logged, {} on the wire",
            logged.len(),
            wire.len()
        ));
    }
    for (i, (l, w)) in logged.iter().zip(wire).enumerate() {
        let header = (
            l["len"].as_u64(),
            l["encoding"].as_u64(),
            l["flags"].as_u64(),
            l["reserved"].as_u64(),
        );
        let want = (
            Some(u64::from(w.len)),
            Some(u64::from(w.encoding)),
            Some(u64::from(w.flags)),
            Some(u64::from(w.reserved)),
        );
        if header != want {
            return Err(format!("{dir} frame {i}: header {header:?}, wire {want:?}"));
        }
        let same_payload = match (l.get("payload"), l.get("payload_text")) {
            (Some(p), _) => serde_json::from_slice::<Value>(&w.payload).ok().as_ref() == Some(p),
            (None, Some(t)) => t.as_str().map(str::as_bytes) == Some(&w.payload[..]),
            (None, None) => false,
        };
        if !same_payload {
            return Err(format!("{dir} frame {i}: payload differs: {l}"));
        }
        if let Some(p) = l.get("payload") {
            for k in ["type", "name", "id", "ref"] {
                if l.get(k) != p.get(k) {
                    return Err(format!("{dir} frame {i}: {k} is not the payload's"));
                }
            }
        }
    }
    Ok(())
}

/// A scripted raw session; returns the bytes sent and received.
fn session(addr: std::net::SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let mut s = raw(addr);
    let mut sent = Vec::new();
    let mut send = |s: &mut std::net::TcpStream, b: &[u8]| {
        s.write_all(b).unwrap();
        sent.extend_from_slice(b);
        std::thread::sleep(Duration::from_millis(20)); // separate reads on the engine side
    };
    let mut first = PREFACE.to_vec();
    first.extend(frame(Some(1), &hello(PROTOCOL_VERSION, None)));
    send(&mut s, &first);
    // A ping split in three writes (the header itself split).
    let ping = frame(
        Some(2),
        &Ping {
            nonce: 7,
            t_client_us: None,
            rt: false,
        },
    );
    send(&mut s, &ping[..3]);
    send(&mut s, &ping[3..20]);
    send(&mut s, &ping[20..]);
    // Two frames in one write, then frames the engine skips with an error.
    let mut two = frame(Some(3), &Play {});
    two.extend(frame(
        Some(4),
        &Ping {
            nonce: 8,
            t_client_us: Some(5),
            rt: true,
        },
    ));
    send(&mut s, &two);
    let mut bad = frame(Some(5), &Play {});
    bad[5] = 0x40; // flags: bad_header
    send(&mut s, &bad);
    let unknown = br#"{"type":"command","name":"no.such","id":6,"body":{}}"#;
    let mut f = (unknown.len() as u32).to_be_bytes().to_vec();
    f.extend([1, 0, 0, 0]);
    f.extend_from_slice(unknown);
    send(&mut s, &f);
    let goodbye = br#"{"type":"command","name":"goodbye","id":7,"body":{}}"#;
    let mut f = (goodbye.len() as u32).to_be_bytes().to_vec();
    f.extend([1, 0, 0, 0]);
    f.extend_from_slice(goodbye);
    send(&mut s, &f);
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    (sent, got)
}

fn run_logged(log: FrameLogConfig) -> (Vec<u8>, Vec<u8>) {
    let e = Engine::start(fast().frame_log(Some(log)));
    let wire = session(e.addr);
    drop(e); // shuts the server down: the log is complete
    wire
}

#[test]
fn the_log_lists_exactly_the_frames_on_the_wire() {
    let dir = std::env::temp_dir().join(format!("loophole-framelog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frames.jsonl");
    let (sent, got) = run_logged(FrameLogConfig::new(&path));
    let log = log_lines(&path);
    let (c2e, e2c) = (split(&sent), split(&got));
    assert!(
        c2e.len() == 7 && e2c.len() >= 9,
        "{} / {}",
        c2e.len(),
        e2c.len()
    );
    same_frames(&log, "in", &c2e).unwrap();
    same_frames(&log, "out", &e2c).unwrap();

    // The events around the frames: start, both prefaces first, close last, one connection.
    assert_eq!(log[0]["event"], "start");
    let conn = &log[1]["conn"];
    assert!(
        log[1..].iter().all(|l| &l["conn"] == conn),
        "one connection id"
    );
    let events: Vec<_> = log.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"start"));
    assert_eq!(events.last(), Some(&"close"), "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "preface").count(), 2);
    // The skipped frame carries the engine's error code; times never go backwards.
    let bad = log.iter().find(|l| l["flags"] == 0x40).unwrap();
    assert_eq!(bad["decode_error"], "bad_header");
    let times: Vec<u64> = log[1..]
        .iter()
        .map(|l| l["t_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Negative controls: the comparison sees a missing frame and a reordering.
    let mut missing = e2c.clone();
    missing.remove(3);
    assert!(same_frames(&log, "out", &missing).is_err());
    let mut swapped = c2e.clone();
    swapped.swap(1, 2);
    assert!(same_frames(&log, "in", &swapped).is_err());
    let mut altered = c2e.clone();
    altered[1].payload[20] ^= 1;
    assert!(same_frames(&log, "in", &altered).is_err());

    // Bounded: the same session with a 2 KiB bound ends with `truncated` within the bound;
    // unbounded it is longer (negative control: the bound did something).
    let full = std::fs::metadata(&path).unwrap().len();
    let small_path = dir.join("small.jsonl");
    let mut small = FrameLogConfig::new(&small_path);
    small.max_bytes = 2048;
    run_logged(small);
    let size = std::fs::metadata(&small_path).unwrap().len();
    let small_log = log_lines(&small_path);
    assert!(size <= 2048, "bounded log is {size} bytes");
    assert!(
        full > 2048,
        "the unbounded log ({full} bytes) exceeds the bound"
    );
    assert_eq!(small_log.last().unwrap()["event"], "truncated");
    std::fs::remove_dir_all(&dir).unwrap();
}

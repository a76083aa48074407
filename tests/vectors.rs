//! The Rust codec against the golden vectors of `docs/specs/ipc/vectors/`, both ways: every
//! positive frame decodes, and every canonical one re-encodes to the same bytes; every negative
//! vector is rejected with the code (and `ref`, and close decision) the vector names.

mod common;

use loophole_ipc::frame::{FrameDecoder, PREFACE};
use loophole_ipc::message::*;
use loophole_ipc::session::{Driver, RouteError, RouteFull, Session, SessionConfig, SessionState};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/specs/ipc/vectors/vectors.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let h = v["hex"].as_str().unwrap();
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// The whole frame (header + payload) our encoder writes for `m`.
fn enc<M: Message>(id: Option<u32>, m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = encode_frame(id, m, &mut buf, 65_536).unwrap();
    buf.truncate(n);
    buf
}

/// The whole frame with an attachment our encoder writes for `m` and `values`.
fn enc_att<M: Message>(m: &M, values: &[f32]) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = encode_frame_with_attachment(None, m, values, &mut buf, 65_536).unwrap();
    buf.truncate(n);
    buf
}

fn encode_command(id: u32, c: &Command) -> Vec<u8> {
    let id = Some(id);
    match c {
        Command::Hello(b) => enc(id, b),
        Command::Ping(b) => enc(id, b),
        Command::Goodbye => enc(id, &Goodbye {}),
        Command::Play => enc(id, &Play {}),
        Command::Stop => enc(id, &Stop {}),
        Command::Seek(b) => enc(id, b),
        Command::Tempo(b) => enc(id, b),
        Command::Loop(b) => enc(id, b),
        Command::ParamSet(b) => enc(id, b),
        Command::AddNode(b) => enc(id, b),
        Command::RemoveNode(b) => enc(id, b),
        Command::Connect(e) => enc(id, &Connect(*e)),
        Command::Disconnect(e) => enc(id, &Disconnect(*e)),
        Command::Shutdown => enc(id, &Shutdown {}),
        Command::Subscribe(b) => enc(id, b),
        Command::Unsubscribe(b) => enc(id, b),
        Command::SubscribeAnalysis(b) => enc(id, b),
        Command::UnsubscribeAnalysis(b) => enc(id, b),
        other => panic!("no encoder for {other:?}"),
    }
}

/// The decoded values of an analysis frame (empty for other messages).
fn values_of(inc: &Incoming<'_>) -> Vec<f32> {
    match (&inc.message, &inc.values) {
        (ServerMessage::Analysis(m), Some(v)) => {
            let mut out = vec![0.0; m.value_count()];
            m.read_values(v, &mut out).unwrap().to_vec()
        }
        _ => Vec::new(),
    }
}

fn encode_server(r: Option<u32>, m: &ServerMessage, values: &[f32]) -> Vec<u8> {
    match m {
        ServerMessage::Analysis(a) => {
            let json = (!a.attachment).then_some(values);
            match a.stream {
                AnalysisStream::Scope => {
                    let body = Scope {
                        tap: a.tap,
                        points: a.size,
                        samples_per_point: a.samples_per_point,
                        sample: a.sample,
                        missed: a.missed,
                        values: json,
                    };
                    if a.attachment {
                        enc_att(&body, values)
                    } else {
                        enc(r, &body)
                    }
                }
                AnalysisStream::Spectrum => {
                    let body = Spectrum {
                        tap: a.tap,
                        bins: a.size,
                        sample_rate: a.sample_rate,
                        sample: a.sample,
                        missed: a.missed,
                        values: json,
                    };
                    if a.attachment {
                        enc_att(&body, values)
                    } else {
                        enc(r, &body)
                    }
                }
            }
        }
        ServerMessage::Welcome(b) => enc(r, b),
        ServerMessage::Pong(b) => enc(r, b),
        ServerMessage::Ack(b) => enc(r, b),
        ServerMessage::Error(b) => enc(r, b),
        ServerMessage::Log(b) => enc(r, b),
        ServerMessage::Goodbye(b) => enc(r, b),
        ServerMessage::Transport(b) => enc(r, b),
        ServerMessage::Meters(b) => enc(r, b),
        ServerMessage::Health(b) => enc(r, b),
        other => panic!("no encoder for {other:?}"),
    }
}

/// What a decoder makes of one frame: the re-encoded frame, and the message and values read.
type Decoded = (Vec<u8>, Option<u32>, String, Vec<f32>);

/// Decodes a whole frame in the vector's direction and re-encodes what it got.
fn round_trip(dir: &str, frame: &[u8]) -> Result<Decoded, String> {
    let mut dec = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    // Only a client that asked reads attachments; an engine never does.
    dec.set_accept_attachments(dir != "client_to_engine");
    dec.push(frame);
    let f = dec.next_frame().unwrap().map_err(|e| format!("{e:?}"))?;
    if dir == "client_to_engine" {
        let (id, c) = Command::decode(f.payload).map_err(|e| format!("{e:?}"))?;
        Ok((
            encode_command(id, &c),
            Some(id),
            format!("{c:?}"),
            Vec::new(),
        ))
    } else {
        let inc = ServerMessage::decode_frame(&f).map_err(|e| format!("{e:?}"))?;
        let values = values_of(&inc);
        let again = encode_server(inc.reference, &inc.message, &values);
        let mut what = format!("{:?}", inc.message);
        if let ServerMessage::Analysis(m) = &inc.message {
            // The twin vectors differ only in the form.
            what = format!(
                "{:?}",
                AnalysisMeta {
                    attachment: false,
                    ..*m
                }
            );
        }
        Ok((again, inc.reference, what, values))
    }
}

/// The whole frames (header + payload) of a vector's bytes.
fn frames(bytes: &[u8], preface: bool) -> Vec<Vec<u8>> {
    let mut dec = if preface {
        FrameDecoder::new(vec![0u8; 70_000], 65_536).unwrap()
    } else {
        FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap()
    };
    dec.set_accept_attachments(true);
    assert_eq!(dec.push(bytes), bytes.len());
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame() {
        let f = f.unwrap();
        let mut whole = vec![0u8; 8];
        let flags = if f.attachment.is_some() { 1 } else { 0 };
        whole[..4].copy_from_slice(&(f.payload.len() as u32).to_be_bytes());
        whole[4] = 1;
        whole[5] = flags;
        whole[6..8]
            .copy_from_slice(&(if flags == 1 { f.json.len() as u16 } else { 0 }).to_be_bytes());
        whole.extend_from_slice(f.payload);
        out.push(whole);
    }
    assert!(!dec.is_mid_frame(), "trailing bytes");
    out
}

#[test]
fn positive_vectors_decode_and_canonical_ones_reencode_byte_for_byte() {
    let all = vectors();
    let mut checked = 0;
    for v in all
        .iter()
        .filter(|v| v["kind"] == "frame" || v["kind"] == "stream")
    {
        let name = v["name"].as_str().unwrap();
        let dir = v["direction"].as_str().unwrap();
        let bytes = hex(v);
        let payloads = frames(&bytes, v["kind"] == "stream");
        for p in &payloads {
            let (again, _, _, values) =
                round_trip(dir, p).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(want) = v["attachment"].as_array() {
                let want: Vec<f32> = want.iter().map(|x| x.as_f64().unwrap() as f32).collect();
                assert_eq!(values, want, "{name}: attachment values");
            }
            if v["canonical"] == true {
                assert_eq!(
                    String::from_utf8_lossy(&again),
                    String::from_utf8_lossy(p),
                    "{name}: our encoder differs from the vector"
                );
            }
            checked += 1;
        }
        if let Some(twin) = v["same_values_as"].as_str() {
            let t = all.iter().find(|x| x["name"] == twin).unwrap();
            let tp = &frames(&hex(t), false)[0];
            let (_, r1, m1, v1) = round_trip(dir, &payloads[0]).unwrap();
            let (_, r2, m2, v2) = round_trip(dir, tp).unwrap();
            assert!(!v2.is_empty(), "{twin}: values read");
            assert_eq!(
                (r1, m1, v1),
                (r2, m2, v2),
                "{name} vs {twin}: same message, same values"
            );
        }
        if let Some(twin) = v["same_as"].as_str() {
            let t = all.iter().find(|x| x["name"] == twin).unwrap();
            let tp = &frames(&hex(t), false)[0];
            assert_eq!(
                round_trip(dir, &payloads[0]),
                round_trip(dir, tp),
                "{name} vs {twin}"
            );
        }
    }
    assert!(checked >= 45, "only {checked} frames checked");
}

/// A driver for session-layer vectors: accepts everything.
struct Accept;

impl Driver for Accept {
    fn claim(&mut self) -> bool {
        true
    }
    fn release(&mut self) {}
    fn route_audio(&mut self, _: u32, _: &Command) -> Result<(), RouteFull> {
        Ok(())
    }
    fn route_control(&mut self, _: u32, _: &Command) -> Result<(), RouteError> {
        Ok(())
    }
    fn snapshot(&mut self) -> (TransportState, Health) {
        let t = TransportState::default();
        (t, Health::default())
    }
}

/// Runs the vector's bytes through a real session in the vector's state; returns the first
/// error frame the session sent (code, ref) and whether it closed.
fn through_session(v: &Value) -> (Option<(String, Option<u32>)>, bool) {
    let w = common::test_welcome();
    let max_frame = v["max_frame"].as_u64().unwrap_or(65_536) as u32;
    let cfg = SessionConfig {
        max_frame,
        handshake_timeout: 1_000_000_000,
        heartbeat_interval: 1_000_000_000,
        heartbeat_timeout: 5_000_000_000,
        slow_consumer_timeout: 5_000_000_000,
        token: None,
        welcome: &w,
        attachments: false,
        // The engine of the vectors has 2 analysis taps unless a vector says otherwise.
        taps: v["taps"].as_u64().unwrap_or(2) as u16,
    };
    let mut s = Session::new(
        &cfg,
        vec![0u8; 8 + max_frame as usize],
        vec![0u8; 65_536],
        0,
    )
    .unwrap();
    let feed = |s: &mut Session<Vec<u8>, Vec<u8>>, b: &[u8]| {
        let space = s.rx_space();
        space[..b.len()].copy_from_slice(b);
        s.rx_commit(b.len());
        s.poll(1, &mut Accept);
    };
    let bytes = hex(v);
    if v["layer"] != "preface" {
        feed(&mut s, &PREFACE);
        if v["state"] == "established" {
            let mut hello = vec![0u8; 256];
            let h = Hello {
                protocol: 1,
                client: "t".try_into().unwrap(),
                token: None,
                attachments: false,
            };
            let n = encode_frame(Some(1), &h, &mut hello, 4096).unwrap();
            feed(&mut s, &hello[..n]);
            assert_eq!(s.state(), SessionState::Open);
        }
        let skip = s.tx_pending().len();
        s.tx_consumed(skip, 1);
    }
    feed(&mut s, &bytes);
    let mut dec = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    let out = s.tx_pending().to_vec();
    let out = out.strip_prefix(&PREFACE[..]).unwrap_or(&out);
    dec.push(out);
    let mut first = None;
    while let Some(f) = dec.next_frame() {
        if let Ok((r, ServerMessage::Error(e))) = ServerMessage::decode(f.unwrap().payload) {
            first.get_or_insert((e.code.to_string(), r));
        }
    }
    (first, s.is_closed())
}

#[test]
fn negative_vectors_get_the_named_error_ref_and_close() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for v in vectors().iter().filter(|v| v["kind"] == "negative") {
        let name = v["name"].as_str().unwrap();
        let (got, closed) = through_session(v);
        let want = v["error"]
            .as_str()
            .map(|c| (c.to_string(), v["ref"].as_u64().map(|r| r as u32)));
        if got != want || closed != (v["closes"] == true) {
            wrong.push(format!(
                "{name}: got {got:?} closed={closed}, want {want:?} closes={}",
                v["closes"]
            ));
        }
        checked += 1;
    }
    // Every mismatch at once: a regression shows its whole extent.
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 83, "only {checked} negative vectors");
}

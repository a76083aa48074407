//! Encode and decode cost of three messages with our no-heap codec and with `serde_json` on the
//! same structs, in the same run. Prints the ratio ours / serde_json (target ≤ 1.0).
//!
//! Issue 14, same run: a 1024-bin `spectrum` frame as JSON arrays vs with a binary attachment:
//! engine-side encode per frame, bytes on the wire, and client-side decode per frame (frame
//! decoder + `ServerMessage::decode_frame` + reading the 1024 values into a buffer, what the
//! Rust client does). Targets: attachment frame ≤ 4.2 KiB (4 300 bytes, header included), in
//! the common case and in the worst case this engine writes (tap `MAX_TAPS - 1`, `sample_rate`
//! u32::MAX, `sample` and `missed` at the 2^53 - 1 clamp); decode ≥ 10× faster than JSON;
//! printed MET/MISSED.
//!
//! Run: `cargo bench --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use loophole_ipc::frame::FrameDecoder;
use loophole_ipc::message::{
    encode_frame, encode_frame_with_attachment, Ack, Command, Message, Meters, ParamSet,
    ServerMessage, Spectrum,
};
use serde::{Deserialize, Serialize};

/// The envelope as a `serde_json` user would write it when the body type is known.
#[derive(Serialize, Deserialize)]
struct Env<'a, B> {
    #[serde(rename = "type")]
    kind: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<u32>,
    body: B,
}

fn meters64() -> Meters {
    let mut m = Meters::default();
    for ch in 0..64 {
        m.peak.push(0.9 / (ch as f32 + 1.0)).unwrap();
        m.rms.push(0.3 / (ch as f32 + 1.5)).unwrap();
    }
    m
}

/// 1024 dB values with full f32 precision, as an FFT gives them (the expensive case for JSON).
fn spectrum_db() -> Vec<f32> {
    (0..1024)
        .map(|k| -20.0 - 60.0 * ((k as f32 * 0.37).sin().abs()) - k as f32 / 37.0)
        .collect()
}

fn spectrum_body(values: Option<&[f32]>) -> Spectrum<'_> {
    Spectrum {
        tap: 0,
        bins: 1024,
        sample_rate: 48_000,
        sample: 123_456_789,
        missed: 0,
        values,
    }
}

/// Bytes budget of a 1024-bin attachment frame: 4.2 KiB = 4 300.8 B, header included.
const ATTACHMENT_BUDGET: usize = 4300;

/// The longest 1024-bin attachment frame this engine writes: every scalar at its longest.
fn worst_attachment_frame(db: &[f32]) -> Vec<u8> {
    let body = Spectrum {
        tap: (loophole_ipc::rt::MAX_TAPS - 1) as u16,
        bins: 1024,
        sample_rate: u32::MAX,
        sample: u64::MAX,
        missed: u64::MAX,
        values: None,
    };
    let mut buf = vec![0u8; 70_000];
    let n = encode_frame_with_attachment(None, &body, db, &mut buf, 65_536).unwrap();
    buf.truncate(n);
    buf
}

/// Engine side: one spectrum frame, JSON or attachment form; returns its length on the wire.
fn encode_spectrum(db: &[f32], attach: bool, buf: &mut [u8]) -> usize {
    if attach {
        encode_frame_with_attachment(None, &spectrum_body(None), db, buf, 65_536).unwrap()
    } else {
        encode_frame(None, &spectrum_body(Some(db)), buf, 65_536).unwrap()
    }
}

/// Client side: one frame through the decoder into `out` (the values); returns how many.
fn decode_spectrum(dec: &mut FrameDecoder<Vec<u8>>, frame: &[u8], out: &mut [f32]) -> usize {
    dec.push(frame);
    let f = dec.next_frame().unwrap().unwrap();
    let inc = ServerMessage::decode_frame(&f).unwrap();
    let ServerMessage::Analysis(meta) = inc.message else {
        panic!("not a spectrum")
    };
    meta.read_values(&inc.values.unwrap(), out).unwrap().len()
}

fn ours_encode<M: Message>(id: Option<u32>, m: &M, buf: &mut [u8]) -> usize {
    encode_frame(id, m, buf, u32::MAX).unwrap()
}

fn json_encode<M: Message>(id: Option<u32>, m: &M, out: &mut Vec<u8>) -> usize {
    out.clear();
    let command = M::KIND == loophole_ipc::message::Kind::Command;
    let env = Env {
        kind: M::KIND.as_str(),
        name: M::NAME,
        id: if command { id } else { None },
        reference: if command { None } else { id },
        body: m,
    };
    out.extend_from_slice(&[0u8; 8]);
    serde_json::to_writer(&mut *out, &env).unwrap();
    out.len()
}

/// Mean ns/op of `f` over a fixed number of iterations (for the printed ratio table).
fn ns_per_op(mut f: impl FnMut()) -> f64 {
    for _ in 0..10_000 {
        f();
    }
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn codec(c: &mut Criterion) {
    let param = ParamSet {
        node: 3,
        param: 1,
        value: 0.5,
        ramp_ms: None,
    };
    let meters = meters64();
    let ack = Ack {
        sample: Some(1_234_567),
    };
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);

    let n = ours_encode(Some(42), &param, &mut buf);
    let param_bytes = buf[8..n].to_vec();
    let n = ours_encode(None, &meters, &mut buf);
    let meters_bytes = buf[8..n].to_vec();
    let n = ours_encode(Some(42), &ack, &mut buf);
    let ack_bytes = buf[8..n].to_vec();

    let mut g = c.benchmark_group("codec");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.bench_function("encode/param.set/ours", |b| {
        b.iter(|| ours_encode(Some(42), black_box(&param), &mut buf))
    });
    g.bench_function("encode/param.set/serde_json", |b| {
        b.iter(|| json_encode(Some(42), black_box(&param), &mut out))
    });
    g.bench_function("encode/meters64/ours", |b| {
        b.iter(|| ours_encode(None, black_box(&meters), &mut buf))
    });
    g.bench_function("encode/meters64/serde_json", |b| {
        b.iter(|| json_encode(None, black_box(&meters), &mut out))
    });
    g.bench_function("encode/ack/ours", |b| {
        b.iter(|| ours_encode(Some(42), black_box(&ack), &mut buf))
    });
    g.bench_function("encode/ack/serde_json", |b| {
        b.iter(|| json_encode(Some(42), black_box(&ack), &mut out))
    });
    g.bench_function("decode/param.set/ours", |b| {
        b.iter(|| Command::decode(black_box(&param_bytes)).unwrap())
    });
    g.bench_function("decode/param.set/serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Env<ParamSet>>(black_box(&param_bytes)).unwrap())
    });
    g.bench_function("decode/meters64/ours", |b| {
        b.iter(|| ServerMessage::decode(black_box(&meters_bytes)).unwrap())
    });
    g.bench_function("decode/meters64/serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Env<Meters>>(black_box(&meters_bytes)).unwrap())
    });
    g.bench_function("decode/ack/ours", |b| {
        b.iter(|| ServerMessage::decode(black_box(&ack_bytes)).unwrap())
    });
    g.bench_function("decode/ack/serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Env<Ack>>(black_box(&ack_bytes)).unwrap())
    });
    let db = spectrum_db();
    let mut sbuf = vec![0u8; 70_000];
    let n = encode_spectrum(&db, false, &mut sbuf);
    let spec_json = sbuf[..n].to_vec();
    let n = encode_spectrum(&db, true, &mut sbuf);
    let spec_att = sbuf[..n].to_vec();
    let mut dec = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    dec.set_accept_attachments(true);
    let mut vals = vec![0.0f32; 1024];
    g.bench_function("encode/spectrum1024/json", |b| {
        b.iter(|| encode_spectrum(black_box(&db), false, &mut sbuf))
    });
    g.bench_function("encode/spectrum1024/attachment", |b| {
        b.iter(|| encode_spectrum(black_box(&db), true, &mut sbuf))
    });
    g.bench_function("decode/spectrum1024/json", |b| {
        b.iter(|| decode_spectrum(&mut dec, black_box(&spec_json), &mut vals))
    });
    g.bench_function("decode/spectrum1024/attachment", |b| {
        b.iter(|| decode_spectrum(&mut dec, black_box(&spec_att), &mut vals))
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        analysis_table(&db, &spec_json, &spec_att);
        ratio_table(
            &param,
            &meters,
            &ack,
            &param_bytes,
            &meters_bytes,
            &ack_bytes,
        );
    }
}

/// Median of 5 interleaved runs of each (A, B, A, B, ...), ns/op.
fn medians(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ta.push(ns_per_op(&mut *a));
        tb.push(ns_per_op(&mut *b));
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[2], tb[2])
}

/// Issue 14's figures: 1024-bin spectrum, JSON arrays vs binary attachment.
fn analysis_table(db: &[f32], json: &[u8], att: &[u8]) {
    let mut buf = vec![0u8; 70_000];
    let mut dec = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    dec.set_accept_attachments(true);
    let mut vals = vec![0.0f32; 1024];
    decode_spectrum(&mut dec, att, &mut vals);
    let from_attachment = vals.clone();
    decode_spectrum(&mut dec, json, &mut vals);
    assert_eq!(
        vals, from_attachment,
        "both forms decode to the same values"
    );
    let mut buf2 = vec![0u8; 70_000];
    let (enc_json, enc_att) = medians(
        &mut || {
            black_box(encode_spectrum(black_box(db), false, &mut buf));
        },
        &mut || {
            black_box(encode_spectrum(black_box(db), true, &mut buf2));
        },
    );
    let mut dec2 = FrameDecoder::without_preface(vec![0u8; 70_000], 65_536).unwrap();
    dec2.set_accept_attachments(true);
    let mut vals2 = vec![0.0f32; 1024];
    let (dec_json, dec_att) = medians(
        &mut || {
            black_box(decode_spectrum(&mut dec, black_box(json), &mut vals));
        },
        &mut || {
            black_box(decode_spectrum(&mut dec2, black_box(att), &mut vals2));
        },
    );
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!("\n### 1024-bin spectrum frame: JSON arrays vs binary attachment (same run)\n");
    println!("| | JSON | attachment | ratio JSON/attachment |");
    println!("|---|---:|---:|---:|");
    println!(
        "| bytes on the wire (header included) | {} | {} | {:.2} |",
        json.len(),
        att.len(),
        json.len() as f64 / att.len() as f64
    );
    println!(
        "| engine encode, ns/frame | {enc_json:.0} | {enc_att:.0} | {:.1} |",
        enc_json / enc_att
    );
    println!(
        "| client decode (frame + envelope + 1024 values), ns/frame | {dec_json:.0} | {dec_att:.0} | {:.1} |",
        dec_json / dec_att
    );
    let worst = worst_attachment_frame(db);
    for (what, f) in [("", att), (" (worst case)", &worst[..])] {
        let json_len = usize::from(u16::from_be_bytes([f[6], f[7]]));
        println!(
            "{}target attachment frame{what} <= {ATTACHMENT_BUDGET} B (4.2 KiB): {} ({} B = 8 \
             header + {json_len} envelope (space-padded to a multiple of 8) + {} values)",
            if what.is_empty() { "\n" } else { "" },
            verdict(f.len() <= ATTACHMENT_BUDGET),
            f.len(),
            f.len() - 8 - json_len
        );
    }
    println!(
        "target decode >= 10x faster than JSON: {} ({:.1}x)",
        verdict(dec_json / dec_att >= 10.0),
        dec_json / dec_att
    );
}

/// Interleaves ours and serde_json (A, B, A, B, ...) so drift hits both, and prints ratios.
fn ratio_table(param: &ParamSet, meters: &Meters, ack: &Ack, pb: &[u8], mb: &[u8], ab: &[u8]) {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    println!("\n| operation | ours ns/op | serde_json ns/op | ratio ours/serde_json |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, a: &mut dyn FnMut(), b: &mut dyn FnMut()| {
        let (ma, mb) = medians(a, b);
        println!("| {name} | {ma:.0} | {mb:.0} | {:.2} |", ma / mb);
    };
    row(
        "encode param.set",
        &mut || {
            black_box(ours_encode(Some(42), black_box(param), &mut buf));
        },
        &mut || {
            black_box(json_encode(Some(42), black_box(param), &mut out));
        },
    );
    let mut buf2 = [0u8; 4096];
    let mut out2 = Vec::with_capacity(4096);
    row(
        "encode meters (64 ch)",
        &mut || {
            black_box(ours_encode(None, black_box(meters), &mut buf2));
        },
        &mut || {
            black_box(json_encode(None, black_box(meters), &mut out2));
        },
    );
    let mut buf3 = [0u8; 4096];
    let mut out3 = Vec::with_capacity(4096);
    row(
        "encode ack",
        &mut || {
            black_box(ours_encode(Some(42), black_box(ack), &mut buf3));
        },
        &mut || {
            black_box(json_encode(Some(42), black_box(ack), &mut out3));
        },
    );
    row(
        "decode param.set",
        &mut || {
            black_box(Command::decode(black_box(pb)).unwrap());
        },
        &mut || {
            black_box(serde_json::from_slice::<Env<ParamSet>>(black_box(pb)).unwrap());
        },
    );
    row(
        "decode meters (64 ch)",
        &mut || {
            black_box(ServerMessage::decode(black_box(mb)).unwrap());
        },
        &mut || {
            black_box(serde_json::from_slice::<Env<Meters>>(black_box(mb)).unwrap());
        },
    );
    row(
        "decode ack",
        &mut || {
            black_box(ServerMessage::decode(black_box(ab)).unwrap());
        },
        &mut || {
            black_box(serde_json::from_slice::<Env<Ack>>(black_box(ab)).unwrap());
        },
    );
}

criterion_group!(benches, codec);
criterion_main!(benches);

//! Encode and decode cost of three messages with our no-heap codec and with `serde_json` on the
//! same structs, in the same run. Prints the ratio ours / serde_json (target ≤ 1.0).
//!
//! Run: `cargo bench --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use loophole_ipc::message::{encode_frame, Ack, Command, Message, Meters, ParamSet, ServerMessage};
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
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
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

/// Interleaves ours and serde_json (A, B, A, B, ...) so drift hits both, and prints ratios.
fn ratio_table(param: &ParamSet, meters: &Meters, ack: &Ack, pb: &[u8], mb: &[u8], ab: &[u8]) {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    println!("\n| operation | ours ns/op | serde_json ns/op | ratio ours/serde_json |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, a: &mut dyn FnMut(), b: &mut dyn FnMut()| {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            ta.push(ns_per_op(&mut *a));
            tb.push(ns_per_op(&mut *b));
        }
        ta.sort_by(f64::total_cmp);
        tb.sort_by(f64::total_cmp);
        let (ma, mb) = (ta[2], tb[2]);
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

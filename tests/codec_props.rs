//! Property tests: multi-frame streams cut at arbitrary points decode to the same frames, and
//! arbitrary bytes never panic the decoder or the envelope parser.

mod common;

use loophole_ipc::frame::{FrameDecoder, FrameHeader, PREFACE};
use loophole_ipc::message::{
    encode_frame, encode_frame_with_attachment, Command, Envelope, Scope, ServerMessage, Spectrum,
};
use proptest::prelude::*;

fn all_payloads() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    common::for_each_payload(|p, _| v.push(p.to_vec()));
    v
}

fn stream(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for p in payloads {
        out.extend_from_slice(&FrameHeader::json(p.len() as u32).to_bytes());
        out.extend_from_slice(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]

    #[test]
    fn any_chunking_yields_the_same_frames(
        picks in prop::collection::vec(0usize..29, 1..40),
        cuts in prop::collection::vec(1usize..200, 1..200),
    ) {
        let all = all_payloads();
        let payloads: Vec<Vec<u8>> = picks.iter().map(|&i| all[i].clone()).collect();
        let bytes = stream(&payloads);
        let mut dec = FrameDecoder::new(vec![0u8; 4200], 4096).unwrap();
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < bytes.len() {
            let end = (at + cut.next().unwrap()).min(bytes.len());
            let mut piece = &bytes[at..end];
            while !piece.is_empty() {
                let n = dec.push(piece);
                piece = &piece[n..];
                while let Some(f) = dec.next_frame() {
                    got.push(f.unwrap().payload.to_vec());
                }
            }
            at = end;
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn garbage_never_panics_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048), with_preface: bool) {
        let mut input = if with_preface { PREFACE.to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let mut dec = FrameDecoder::new(vec![0u8; 264], 256).unwrap();
        let mut rest = input.as_slice();
        let mut steps = 0;
        loop {
            let n = dec.push(rest);
            rest = &rest[n..];
            let mut progressed = n > 0;
            while let Some(r) = dec.next_frame() {
                steps += 1;
                match r {
                    Ok(f) => { let _ = Command::decode(f.payload); let _ = ServerMessage::decode(f.payload); progressed = true; }
                    Err(e) if e.is_fatal() => { rest = &[]; break; }
                    Err(_) => progressed = true,
                }
                if steps > 10_000 { break; }
            }
            if rest.is_empty() || !progressed { break; }
        }
    }

    #[test]
    fn garbage_never_panics_the_envelope_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&bytes);
        let _ = Command::decode(&bytes);
        let _ = ServerMessage::decode(&bytes);
    }

    #[test]
    fn json_like_garbage_never_panics(s in r#"[{}\[\]",:0-9a-z\\ .eE+-]{0,200}"#) {
        let _ = Command::decode(s.as_bytes());
        let wrapped = format!(r#"{{"type":"command","name":"param.set","id":1,"body":{s}}}"#);
        let _ = Command::decode(wrapped.as_bytes());
    }
}

/// The scanner agrees with serde_json about which texts are JSON (a differential check).
#[test]
fn scanner_agrees_with_serde_json() {
    let cases = [
        "{}",
        "[]",
        "[1,2]",
        "{\"a\":[1,{\"b\":null}]}",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "01",
        "-0",
        "1.",
        "1e",
        "1e+5",
        "\"\\u12\"",
        "\"\\x\"",
        "\"a\tb\"",
        "{\"a\":tru}",
        "nul",
        "[[[[[]]]]]",
        "{\"a\":1}}",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\u00e9\"",
    ];
    // Not listed: a surrogate *pair* escape (`"\ud83d\ude00"`) is valid JSON, which serde_json
    // accepts, while the protocol refuses every surrogate escape as `invalid_json`
    // (envelope.md): characters outside the BMP travel as UTF-8.
    for c in cases {
        let ours = loophole_ipc::message::scan::value_end(c.as_bytes(), 0)
            .map(|end| end == c.len())
            .unwrap_or(false);
        let theirs = serde_json::from_str::<serde_json::Value>(c).is_ok();
        assert_eq!(ours, theirs, "{c}");
    }
}

fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(at, b) in edits {
        if !v.is_empty() {
            let i = at % v.len();
            v[i] = b;
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The canonical fast path and the generic parser agree on every input: same value or same
    /// error, including for near-canonical mutations of real payloads.
    #[test]
    fn fast_path_agrees_with_generic_parser(
        pick in 0usize..29,
        edits in prop::collection::vec((any::<usize>(), prop::sample::select(b"{}[]\",:0123456789 .e-abxyz\\\x00\xff".to_vec())), 0..3),
    ) {
        let all = all_payloads();
        let p = mutate(&all[pick], &edits);
        prop_assert_eq!(Command::decode(&p), Command::decode_generic(&p));
        prop_assert_eq!(ServerMessage::decode(&p), ServerMessage::decode_generic(&p));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue 14: analysis frames in both forms, with random values and near-canonical mutations
    /// of their bytes: the fast path and the generic parser agree (same message and values, or
    /// the same error), and an unmutated frame gives back exactly the values sent.
    #[test]
    fn analysis_frames_fast_path_agrees_and_values_survive(
        values in prop::collection::vec(any::<f32>(), 16),
        scope in any::<bool>(),
        attach in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), prop::sample::select(b"{}[]\",:0123456789 .e-abxyz\\\x00\xff".to_vec())), 0..3),
    ) {
        let mut buf = vec![0u8; 8192];
        let n = match (scope, attach) {
            (true, true) => encode_frame_with_attachment(None, &Scope { tap: 0, points: 8, samples_per_point: 2, sample: 9, missed: 1, values: None }, &values, &mut buf, 65_536),
            (true, false) => encode_frame(None, &Scope { tap: 0, points: 8, samples_per_point: 2, sample: 9, missed: 1, values: Some(&values) }, &mut buf, 65_536),
            (false, true) => encode_frame_with_attachment(None, &Spectrum { tap: 3, bins: 16, sample_rate: 44_100, sample: 9, missed: 0, values: None }, &values, &mut buf, 65_536),
            (false, false) => encode_frame(None, &Spectrum { tap: 3, bins: 16, sample_rate: 44_100, sample: 9, missed: 0, values: Some(&values) }, &mut buf, 65_536),
        }.unwrap();
        let clean = buf[..n].to_vec();
        for (bytes, mutated) in [(clean.clone(), false), ({
            let mut m = clean.clone();
            let body = mutate(&m[8..], &edits);
            m[8..].copy_from_slice(&body);
            m
        }, true)] {
            let mut dec = FrameDecoder::without_preface(vec![0u8; 8200], 8192).unwrap();
            dec.set_accept_attachments(true);
            dec.push(&bytes);
            let Some(Ok(f)) = dec.next_frame() else { continue };
            let fast = ServerMessage::decode_frame(&f);
            prop_assert_eq!(&fast, &ServerMessage::decode_frame_generic(&f));
            if !mutated {
                let inc = fast.unwrap();
                let ServerMessage::Analysis(m) = inc.message else { panic!() };
                prop_assert_eq!(m.attachment, attach);
                let mut out = [0.0f32; 16];
                m.read_values(&inc.values.unwrap(), &mut out).unwrap();
                let want: Vec<u32> = values.iter().map(|v| loophole_ipc::message::analysis::finite(*v).to_bits()).collect();
                let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

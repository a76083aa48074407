//! Round trips and error cases of the protocol core: every message, framing in any split.

use loophole_ipc::error::{DecodeError, EnvelopeProblem, FieldProblem};
use loophole_ipc::frame::{FrameDecoder, FrameHeader, HEADER_LEN, PREFACE};
use loophole_ipc::message::*;

fn s<const N: usize>(v: &str) -> heapless::String<N> {
    heapless::String::try_from(v).unwrap()
}

fn payload<M: Message>(id: Option<u32>, m: &M) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = encode_payload(id, m, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Every command in the catalogue, with its id.
pub fn all_commands() -> Vec<(Vec<u8>, Command)> {
    let edge = Edge {
        from: 1,
        from_port: 0,
        to: 2,
        to_port: 1,
    };
    vec![
        (
            payload(
                Some(1),
                &Hello {
                    protocol: 1,
                    client: s("aura/0.1"),
                    token: Some(s("t\"ok")),
                    attachments: false,
                },
            ),
            Command::Hello(Hello {
                protocol: 1,
                client: s("aura/0.1"),
                token: Some(s("t\"ok")),
                attachments: false,
            }),
        ),
        (
            payload(
                Some(2),
                &Ping {
                    nonce: 9,
                    t_client_us: Some(5),
                    rt: true,
                },
            ),
            Command::Ping(Ping {
                nonce: 9,
                t_client_us: Some(5),
                rt: true,
            }),
        ),
        (payload(Some(3), &Goodbye {}), Command::Goodbye),
        (payload(Some(4), &Play {}), Command::Play),
        (payload(Some(5), &Stop {}), Command::Stop),
        (
            payload(Some(6), &Seek { sample: 48_000 }),
            Command::Seek(Seek { sample: 48_000 }),
        ),
        (
            payload(Some(7), &Tempo { bpm: 120.5 }),
            Command::Tempo(Tempo { bpm: 120.5 }),
        ),
        (
            payload(
                Some(8),
                &Loop {
                    start: 0,
                    end: 96_000,
                    enabled: true,
                },
            ),
            Command::Loop(Loop {
                start: 0,
                end: 96_000,
                enabled: true,
            }),
        ),
        (
            payload(
                Some(9),
                &ParamSet {
                    node: 3,
                    param: 1,
                    value: 0.25,
                    ramp_ms: Some(10.0),
                },
            ),
            Command::ParamSet(ParamSet {
                node: 3,
                param: 1,
                value: 0.25,
                ramp_ms: Some(10.0),
            }),
        ),
        (
            payload(
                Some(10),
                &AddNode {
                    node: 4,
                    kind: s("osc"),
                },
            ),
            Command::AddNode(AddNode {
                node: 4,
                kind: s("osc"),
            }),
        ),
        (
            payload(Some(11), &RemoveNode { node: 4 }),
            Command::RemoveNode(RemoveNode { node: 4 }),
        ),
        (payload(Some(12), &Connect(edge)), Command::Connect(edge)),
        (
            payload(Some(13), &Disconnect(edge)),
            Command::Disconnect(edge),
        ),
        (payload(Some(14), &Shutdown {}), Command::Shutdown),
        (
            payload(
                Some(15),
                &Subscribe {
                    stream: Stream::Meters,
                    rate_hz: 30,
                },
            ),
            Command::Subscribe(Subscribe {
                stream: Stream::Meters,
                rate_hz: 30,
            }),
        ),
        (
            payload(
                Some(u32::MAX),
                &Unsubscribe {
                    stream: Stream::Health,
                },
            ),
            Command::Unsubscribe(Unsubscribe {
                stream: Stream::Health,
            }),
        ),
    ]
}

#[test]
fn every_command_round_trips() {
    for (i, (bytes, want)) in all_commands().into_iter().enumerate() {
        let (id, got) = Command::decode(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&bytes));
        let want_id = if i == 15 { u32::MAX } else { i as u32 + 1 };
        assert_eq!(id, want_id);
        // serde_json agrees the payload is the JSON we meant.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "command");
        assert_eq!(v["name"], want.name());
    }
}

#[test]
fn every_server_message_round_trips() {
    let mut meters = Meters::default();
    for ch in 0..64 {
        meters.peak.push(ch as f32 / 64.0).unwrap();
        meters.rms.push(ch as f32 / 128.0).unwrap();
    }
    let cases: Vec<(Vec<u8>, Option<u32>, ServerMessage)> = vec![
        {
            let w = Welcome {
                protocol: 1,
                engine: s("signal/0.1.0"),
                instance: s("0123456789abcdef"),
                sample_rate: 48_000,
                block_size: 128,
                max_frame: 65_536,
                heartbeat_ms: 1000,
                timeout_ms: 5000,
                attachments: false,
                taps: 0,
            };
            (payload(Some(1), &w), Some(1), ServerMessage::Welcome(w))
        },
        {
            let p = Pong {
                nonce: 3,
                t_client_us: None,
                t_engine_us: 77,
                sample: Some(128),
            };
            (payload(Some(2), &p), Some(2), ServerMessage::Pong(p))
        },
        (
            payload(Some(3), &Ack { sample: Some(256) }),
            Some(3),
            ServerMessage::Ack(Ack { sample: Some(256) }),
        ),
        (
            payload(Some(4), &Ack { sample: None }),
            Some(4),
            ServerMessage::Ack(Ack { sample: None }),
        ),
        {
            let e = error_body(
                loophole_ipc::ErrorCode::OutOfRange,
                format_args!("bpm {} \"too\" fast", 1000),
            );
            (payload(Some(5), &e), Some(5), ServerMessage::Error(e))
        },
        {
            let l = Log {
                level: LogLevel::Warn,
                message: s("xrun\n"),
            };
            (payload(None, &l), None, ServerMessage::Log(l))
        },
        {
            let g = GoodbyeNotice {
                reason: GoodbyeReason::HeartbeatTimeout,
            };
            (payload(None, &g), None, ServerMessage::Goodbye(g))
        },
        {
            let t = TransportState {
                playing: true,
                position: 1 << 40,
                bpm: 128.0,
                loop_start: 0,
                loop_end: 10,
                loop_enabled: false,
            };
            (payload(None, &t), None, ServerMessage::Transport(t))
        },
        (
            payload(None, &meters),
            None,
            ServerMessage::Meters(meters.clone()),
        ),
        {
            let h = Health {
                callbacks: 10,
                xruns: 1,
                dsp_load: 0.5,
                cmd_queue_len: 2,
                cmd_queue_capacity: 256,
                cmd_queue_high: 9,
                reply_queue_high: 4,
                telemetry_dropped: 0,
                telemetry_shed: 7,
            };
            (payload(None, &h), None, ServerMessage::Health(h))
        },
    ];
    for (bytes, r, want) in cases {
        let (got_ref, got) = ServerMessage::decode(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(
            (got_ref, &got),
            (r, &want),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let _: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    }
}

#[test]
fn canonical_bytes() {
    assert_eq!(
        payload(
            Some(7),
            &Ping {
                nonce: 1,
                t_client_us: None,
                rt: false
            }
        ),
        br#"{"type":"command","name":"ping","id":7,"body":{"nonce":1}}"#
    );
    assert_eq!(
        payload(
            Some(42),
            &ParamSet {
                node: 3,
                param: 1,
                value: 0.5,
                ramp_ms: None
            }
        ),
        br#"{"type":"command","name":"param.set","id":42,"body":{"node":3,"param":1,"value":0.5}}"#
    );
    assert_eq!(
        payload(Some(9), &Ack { sample: None }),
        br#"{"type":"reply","name":"ack","ref":9,"body":{}}"#
    );
    assert_eq!(
        payload(None, &Tempo { bpm: 1.0 }),
        br#"{"type":"command","name":"transport.tempo","body":{"bpm":1.0}}"#
    );
}

fn cmd_err(json: &str) -> (Option<u32>, DecodeError) {
    let e = Command::decode(json.as_bytes()).unwrap_err();
    (e.id, e.error)
}

#[test]
fn envelope_errors_are_precise() {
    let inv = |key, problem| DecodeError::InvalidEnvelope { key, problem };
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":1,"body":{"nonce":1}"#).1,
        DecodeError::InvalidJson { offset: 57 }
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","body":{"nonce":1}}"#),
        (None, inv("id", EnvelopeProblem::Missing))
    );
    assert_eq!(
        cmd_err(r#"{"type":"cmd","name":"ping","id":4,"body":{}}"#),
        (None, DecodeError::UnknownType),
        "ref only for what is a command"
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"body":{"nonce":-1}}"#),
        (
            Some(4),
            DecodeError::InvalidField {
                problem: FieldProblem::NumberOutOfRange
            }
        )
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"Ping","id":4,"body":{}}"#),
        (Some(4), inv("name", EnvelopeProblem::Invalid))
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"nope","id":4,"body":{}}"#),
        (Some(4), DecodeError::UnknownMessage)
    );
    assert_eq!(
        cmd_err(r#"{"type":"reply","name":"ack","ref":4,"body":{}}"#),
        (None, DecodeError::UnexpectedType)
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"id":5,"body":{}}"#),
        (None, inv("id", EnvelopeProblem::Duplicate))
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":-1,"body":{}}"#),
        (None, inv("id", EnvelopeProblem::Invalid))
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4294967296,"body":{}}"#),
        (None, inv("id", EnvelopeProblem::Invalid))
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"body":[]}"#),
        (Some(4), inv("body", EnvelopeProblem::Invalid))
    );
    assert_eq!(
        cmd_err(r#"[1,2]"#),
        (None, inv("payload", EnvelopeProblem::Invalid))
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"body":{"nonce":"x"}}"#),
        (
            Some(4),
            DecodeError::InvalidField {
                problem: FieldProblem::WrongType
            }
        )
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"body":{}}"#),
        (
            Some(4),
            DecodeError::InvalidField {
                problem: FieldProblem::MissingOrUnknown
            }
        )
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"ping","id":4,"body":{"nonce":1,"x":2}}"#),
        (
            Some(4),
            DecodeError::InvalidField {
                problem: FieldProblem::MissingOrUnknown
            }
        )
    );
    assert_eq!(
        cmd_err(r#"{"type":"command","name":"transport.tempo","id":4,"body":{"bpm":1000}}"#),
        (Some(4), DecodeError::OutOfRange { field: "bpm" })
    );
    let long = format!(
        r#"{{"type":"command","name":"hello","id":4,"body":{{"protocol":1,"client":"{}"}}}}"#,
        "a".repeat(65)
    );
    assert_eq!(cmd_err(&long).0, Some(4));
    assert!(matches!(cmd_err(&long).1, DecodeError::InvalidField { .. }));
    // Unknown envelope keys are ignored; whitespace and key order are free.
    let (id, c) = Command::decode(br#" { "body" : {"nonce":1} , "x":[1,{"y":null}], "id":3, "name":"ping", "type":"command" } "#).unwrap();
    assert_eq!(
        (id, c),
        (
            3,
            Command::Ping(Ping {
                nonce: 1,
                t_client_us: None,
                rt: false
            })
        )
    );
    // Escapes in strings are decoded.
    let (_, c) = Command::decode(
        br#"{"type":"command","name":"graph.add_node","id":1,"body":{"node":1,"kind":"o\u0073c"}}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        Command::AddNode(AddNode {
            node: 1,
            kind: s("osc")
        })
    );
    assert_eq!(
        Envelope::parse(b"{\"a\":\"\xff\"}").unwrap_err(),
        DecodeError::InvalidUtf8 { offset: 6 }
    );
}

/// A string one byte over its limit is `invalid_field` "too long", not "missing or unknown"
/// (the body decoder's verdict, which the field table now refines; new-user review: a 65-byte
/// `client`). Controls: 64 bytes decode; an unknown field is still "missing or unknown".
#[test]
fn a_string_over_its_limit_is_said_to_be_too_long() {
    let hello = |client: &str, extra: &str| {
        format!(
            r#"{{"type":"command","name":"hello","id":1,"body":{{"protocol":1,"client":"{client}"{extra}}}}}"#
        )
    };
    let too_long = DecodeError::InvalidField {
        problem: FieldProblem::TooLong,
    };
    let (id, e) = cmd_err(&hello(&"a".repeat(65), ""));
    assert_eq!((id, e), (Some(1), too_long));
    assert_eq!(e.to_string(), "body string or list too long");
    let kind = "k".repeat(MAX_NODE_KIND + 1);
    let add = format!(
        r#"{{"type":"command","name":"graph.add_node","id":2,"body":{{"node":9,"kind":"{kind}"}}}}"#
    );
    assert_eq!(cmd_err(&add).1, too_long);
    assert!(Command::decode(hello(&"a".repeat(64), "").as_bytes()).is_ok());
    assert_eq!(
        cmd_err(&hello("aura", r#","colour":1"#)).1,
        DecodeError::InvalidField {
            problem: FieldProblem::MissingOrUnknown
        }
    );
}

fn stream_of(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for p in payloads {
        out.extend_from_slice(&FrameHeader::json(p.len() as u32).to_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[test]
fn decoder_accepts_any_split() {
    let payloads: Vec<Vec<u8>> = all_commands().into_iter().map(|(p, _)| p).collect();
    let stream = stream_of(&payloads);
    for chunk in [1, 2, 3, 7, 8, 9, 64, stream.len()] {
        let mut dec = FrameDecoder::new([0u8; 1024], 1016).unwrap();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = dec.push(rest);
                rest = &rest[n..];
                while let Some(f) = dec.next_frame() {
                    got.push(f.unwrap().payload.to_vec());
                }
            }
        }
        assert_eq!(got, payloads, "chunk {chunk}");
        assert!(!dec.is_mid_frame());
    }
}

#[test]
fn decoder_errors() {
    let mut dec = FrameDecoder::new([0u8; 72], 64).unwrap();
    dec.push(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        dec.next_frame(),
        Some(Err(DecodeError::BadPreface {
            offset: 0,
            byte: b'G'
        }))
    );
    assert_eq!(
        dec.next_frame(),
        Some(Err(DecodeError::BadPreface {
            offset: 0,
            byte: b'G'
        }))
    );

    let mut dec = FrameDecoder::without_preface([0u8; 72], 64).unwrap();
    dec.push(&FrameHeader::json(65).to_bytes());
    assert_eq!(
        dec.next_frame(),
        Some(Err(DecodeError::FrameTooLarge {
            declared: 65,
            limit: 64
        }))
    );

    // Non-fatal header errors skip the frame and decoding goes on.
    let mut dec = FrameDecoder::without_preface([0u8; 72], 64).unwrap();
    let mut bad = FrameHeader::json(2);
    bad.encoding = 2;
    dec.push(&bad.to_bytes());
    dec.push(b"{}");
    dec.push(
        &FrameHeader {
            flags: 1,
            ..FrameHeader::json(2)
        }
        .to_bytes(),
    );
    dec.push(b"{}");
    dec.push(&FrameHeader::json(0).to_bytes());
    dec.push(&FrameHeader::json(2).to_bytes());
    dec.push(b"{}");
    assert_eq!(
        dec.next_frame().unwrap(),
        Err(DecodeError::UnsupportedEncoding { encoding: 2 })
    );
    assert_eq!(
        dec.next_frame().unwrap(),
        Err(DecodeError::BadHeader {
            flags: 1,
            reserved: 0
        })
    );
    assert_eq!(dec.next_frame().unwrap(), Err(DecodeError::EmptyPayload));
    assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"{}");
    assert_eq!(dec.next_frame(), None);

    assert_eq!(
        FrameDecoder::new([0u8; 10], 64).unwrap_err(),
        DecodeError::BufferTooSmall
    );
}

#[test]
fn encoder_fails_cleanly_when_it_does_not_fit() {
    let mut meters = Meters::default();
    for _ in 0..64 {
        meters.peak.push(0.123_456_79).unwrap();
        meters.rms.push(0.123_456_79).unwrap();
    }
    let mut buf = [0u8; 4096];
    let full = encode_frame(None, &meters, &mut buf, 65_536).unwrap();
    for len in 0..full {
        let mut small = vec![0u8; len];
        assert!(
            encode_frame(None, &meters, &mut small, 65_536).is_err(),
            "len {len}"
        );
    }
    assert_eq!(
        encode_frame(None, &meters, &mut buf, (full - HEADER_LEN - 1) as u32),
        Err(loophole_ipc::EncodeError::FrameTooLarge)
    );
}

#[test]
fn engine_integers_are_clamped_to_2_pow_53_minus_1_never_wrapped() {
    use loophole_ipc::message::{encode_payload, TransportState, MAX_SAFE_INTEGER};
    let mut buf = [0u8; 256];
    let t = TransportState {
        position: u64::MAX,
        loop_start: MAX_SAFE_INTEGER + 1,
        loop_end: MAX_SAFE_INTEGER - 1,
        ..TransportState::default()
    };
    let n = encode_payload(None, &t, &mut buf).unwrap();
    let text = core::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.contains("\"position\":9007199254740991,"), "{text}");
    assert!(text.contains("\"loop_start\":9007199254740991,"), "{text}");
    // Negative control: a value below the limit is written as it is.
    assert!(text.contains("\"loop_end\":9007199254740990,"), "{text}");
}

/// Issue 14: the per-stream field rules of `telemetry.subscribe` read `stream` with its escapes
/// decoded, so an escaped `scope` with an out-of-range `points` is `out_of_range`, and a real
/// misplaced field is still `invalid_field` (errors.md §2 step 10).
#[test]
fn analysis_subscribe_field_rules_see_escaped_streams() {
    let code = |body: &str| {
        let p =
            format!(r#"{{"type":"command","name":"telemetry.subscribe","id":5,"body":{body}}}"#);
        Command::decode(p.as_bytes())
            .unwrap_err()
            .error
            .code()
            .as_str()
    };
    assert_eq!(
        code(r#"{"stream":"sc\u006fpe","rate_hz":30,"tap":0,"points":8}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"stream":"scope","rate_hz":30,"tap":0,"points":8}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"stream":"sc\u006fpe","rate_hz":30,"tap":0,"points":8,"bins":16}"#),
        "invalid_field"
    );
    assert_eq!(
        code(r#"{"stream":"meters","rate_hz":500,"tap":0}"#),
        "invalid_field"
    );
    assert_eq!(code(r#"{"stream":"meters","rate_hz":500}"#), "out_of_range");
    // Decoded: the escaped form is the same command as the plain one.
    let p = br#"{"type":"command","name":"telemetry.subscribe","id":5,"body":{"stream":"sp\u0065ctrum","rate_hz":30,"tap":1,"bins":64}}"#;
    assert_eq!(
        Command::decode(p).unwrap().1,
        Command::SubscribeAnalysis(SubscribeAnalysis {
            stream: AnalysisStream::Spectrum,
            tap: 1,
            size: 64,
            rate_hz: 30
        })
    );
}

/// Issue 14 ("How it must be shown": the attachment frame <= 4.2 KB for 1024 bins): a 1024-bin
/// `spectrum` frame with an attachment is at most 4 296 B, under 4.2 KiB (4 300 B), even in the
/// worst case this engine writes (tap `MAX_TAPS - 1`, `sample_rate` u32::MAX, `sample` and
/// `missed` clamped at 2^53 - 1); the body carries neither `window` nor `hz_per_bin`. Negative
/// control: the body as it was before (those two fields added, nothing else) breaks the budget
/// already in the common case, so the bound bites exactly where the trim matters.
#[test]
fn spectrum_attachment_frame_of_1024_bins_fits_4_2_kib() {
    const BUDGET: usize = 4300;
    #[derive(serde::Serialize)]
    struct OldSpectrum {
        tap: u16,
        bins: u16,
        sample_rate: u32,
        hz_per_bin: f32,
        window: &'static str,
        sample: u64,
        missed: u64,
    }
    impl Message for OldSpectrum {
        const KIND: Kind = Kind::Telemetry;
        const NAME: &'static str = "spectrum";
    }
    let db = vec![-160.0f32; 1024];
    let frame = |m: &dyn Fn(&mut [u8]) -> usize| {
        let mut buf = vec![0u8; 8192];
        let n = m(&mut buf);
        buf.truncate(n);
        buf
    };
    let spectrum = |tap, sample_rate, sample, missed| {
        let s = Spectrum {
            tap,
            bins: 1024,
            sample_rate,
            sample,
            missed,
            values: None,
        };
        frame(&|b| encode_frame_with_attachment(None, &s, &db, b, 65_536).unwrap())
    };
    let common = spectrum(0, 48_000, 4096, 0);
    let max_tap = (loophole_ipc::rt::MAX_TAPS - 1) as u16;
    let worst = spectrum(max_tap, u32::MAX, u64::MAX, u64::MAX);
    let text = String::from_utf8_lossy(&worst[HEADER_LEN..worst.len() - 4096]).into_owned();
    assert!(text.contains("\"sample\":9007199254740991,"), "{text}");
    assert!(text.contains("\"missed\":9007199254740991}"), "{text}");
    for f in [&common, &worst] {
        let t = String::from_utf8_lossy(f);
        assert!(!t.contains("hz_per_bin") && !t.contains("window"), "{t}");
    }
    assert_eq!(common.len(), 4264, "common case");
    assert_eq!(
        worst.len(),
        4296,
        "worst case: 8 + 192 (padded JSON) + 4096"
    );
    assert!(worst.len() <= BUDGET);
    // Negative control: the previous body, common case.
    let old = OldSpectrum {
        tap: 0,
        bins: 1024,
        sample_rate: 48_000,
        hz_per_bin: 23.4375,
        window: "hann",
        sample: 4096,
        missed: 0,
    };
    let old = frame(&|b| encode_frame_with_attachment(None, &old, &db, b, 65_536).unwrap());
    assert_eq!(old.len(), 4304, "the body before the trim");
    assert!(old.len() > BUDGET);
}

/// Issue 14: the client computes the bin width (`sample_rate / (2 bins)`) instead of reading
/// it; a body that still carries `hz_per_bin`/`window` (unknown fields from an engine's point of
/// view) decodes to the same meta, and a wrong `hz_per_bin` there is not believed. Negative
/// control: a different `sample_rate` gives a different bin width.
#[test]
fn spectrum_bin_width_is_computed_by_the_client() {
    let meta = |body: &str| {
        let json = format!(r#"{{"type":"telemetry","name":"spectrum","body":{body}}}"#);
        match ServerMessage::decode(json.as_bytes()).unwrap().1 {
            ServerMessage::Analysis(m) => m,
            other => panic!("{other:?}"),
        }
    };
    let db = format!("[{}]", vec!["-160.0"; 16].join(","));
    let now = meta(&format!(
        r#"{{"tap":1,"bins":16,"sample_rate":48000,"sample":48128,"missed":256,"db":{db}}}"#
    ));
    assert_eq!(now.hz_per_bin(), 1500.0);
    let old = meta(&format!(
        r#"{{"tap":1,"bins":16,"sample_rate":48000,"hz_per_bin":7.0,"window":"hann","sample":48128,"missed":256,"db":{db}}}"#
    ));
    assert_eq!(old, now);
    assert_eq!(old.hz_per_bin(), 1500.0);
    let other = meta(&format!(
        r#"{{"tap":1,"bins":16,"sample_rate":44100,"sample":48128,"missed":256,"db":{db}}}"#
    ));
    assert_eq!(other.hz_per_bin(), 1378.125);
}

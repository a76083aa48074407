//! The Rust client against a real socket and a real `Session` (driven by hand in a thread, like a
//! tiny engine with one tap): it asks for attachments only when told to, and decodes `scope` and
//! `spectrum` into the same `Received` whichever form the engine chose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientOptions, Received};
use loophole_ipc::message::*;
use loophole_ipc::session::*;

mod common;

use common::AcceptAll as Engine;

/// What the fake engine's analysis worker "computes": fixed, recognisable values.
fn values_for(sub: &AnalysisKey) -> Vec<f32> {
    (0..sub.value_count())
        .map(|i| match sub.stream {
            AnalysisStream::Scope => i as f32 / 64.0 - 1.0,
            AnalysisStream::Spectrum => -160.0 + i as f32 * 0.5,
        })
        .collect()
}

/// Serves one connection for up to 3 s with a session that allows attachments.
fn serve(mut sock: TcpStream) {
    sock.set_nonblocking(true).unwrap();
    let w = common::test_welcome();
    let cfg = SessionConfig {
        max_frame: 65_536,
        handshake_timeout: 2_000_000_000,
        heartbeat_interval: 1_000_000_000,
        heartbeat_timeout: 5_000_000_000,
        slow_consumer_timeout: 5_000_000_000,
        token: None,
        welcome: &w,
        taps: 1,
        attachments: true,
    };
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut s = Session::new(&cfg, vec![0u8; 65_544], vec![0u8; 256 * 1024], now()).unwrap();
    while t0.elapsed() < Duration::from_secs(3) && !s.is_closed() {
        let space = s.rx_space();
        if !space.is_empty() {
            match sock.read(space) {
                Ok(0) => s.rx_eof(),
                Ok(n) => s.rx_commit(n),
                Err(_) => {}
            }
        }
        s.poll(now(), &mut Engine);
        let due: Vec<_> = s.analysis_due(now()).collect();
        for sub in due {
            let v = values_for(&sub);
            let d = AnalysisData {
                sample: 1000,
                missed: 2,
                samples_per_point: 3,
                sample_rate: 48_000,
                values: &v,
            };
            s.send_analysis(sub, &d, now()).unwrap();
        }
        let out = s.tx_pending();
        if !out.is_empty() {
            if let Ok(n) = sock.write(out) {
                s.tx_consumed(n, now());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn analysis(client: &mut Client, stream: AnalysisStream) -> Received {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let r = client.recv().unwrap();
        if matches!(&r.message, ServerMessage::Analysis(m) if m.stream == stream) {
            return r;
        }
    }
    panic!("no {stream:?} frame");
}

#[test]
fn the_client_decodes_both_forms_into_the_same_values() {
    for ask in [true, false] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let engine = std::thread::spawn(move || serve(l.accept().unwrap().0));
        let mut opts = ClientOptions::default();
        opts.attachments = ask;
        let mut client = Client::connect(addr, &opts).unwrap();
        assert_eq!(
            client.welcome().attachments,
            ask,
            "negotiated only when asked"
        );
        assert_eq!(client.welcome().taps, 1);
        let mut other = Vec::new();
        for sub in [
            SubscribeAnalysis {
                stream: AnalysisStream::Scope,
                tap: 0,
                size: 16,
                rate_hz: 50,
            },
            SubscribeAnalysis {
                stream: AnalysisStream::Spectrum,
                tap: 0,
                size: 64,
                rate_hz: 50,
            },
        ] {
            let answer = client.request(&sub, &mut other).unwrap();
            assert!(matches!(answer, ServerMessage::Ack(_)), "{answer:?}");
        }
        for (stream, size) in [(AnalysisStream::Scope, 16), (AnalysisStream::Spectrum, 64)] {
            let r = analysis(&mut client, stream);
            let (meta, values) = r.analysis().unwrap();
            assert_eq!(meta.attachment, ask, "{stream:?}: form");
            assert_eq!(
                (meta.tap, meta.size, meta.sample, meta.missed),
                (0, size, 1000, 2)
            );
            let sub = AnalysisKey {
                stream,
                tap: 0,
                size,
            };
            assert_eq!(
                values,
                &values_for(&sub)[..],
                "{stream:?}: values, ask={ask}"
            );
            match stream {
                AnalysisStream::Scope => assert_eq!(meta.samples_per_point, 3),
                AnalysisStream::Spectrum => {
                    assert_eq!(meta.sample_rate, 48_000);
                    assert_eq!(meta.hz_per_bin(), 375.0);
                }
            }
        }
        drop(client);
        engine.join().unwrap();
    }
}

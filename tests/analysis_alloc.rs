//! Allocations while analysis streams flow, steady state (target: 0): the network thread
//! (mailbox take, JSON or attachment encoding), the analysis worker (`examples/signal`'s: tap
//! drain, scope, Hann + FFT with plans made once per size), the simulated audio thread (taps,
//! meters) and this test's raw client (a fixed receive buffer, frames cut by hand).
//!
//! A counting global allocator counts every allocation of the process. A warm-up lets the
//! worker plan its FFTs; then a window of about a second with spectrum + scope frames at 60 Hz
//! in both forms is measured. Negative control: the same counter sees one `Vec` made on
//! another thread.

mod analysis_support;
mod counting_alloc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use analysis_support::Rig;
use counting_alloc::ALLOCS;
use loophole_ipc::frame::PREFACE;
use loophole_ipc::message::{
    encode_frame, AnalysisStream, Hello, Stream, Subscribe, SubscribeAnalysis, PROTOCOL_VERSION,
};
use loophole_ipc::net::Server;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

fn put<M: loophole_ipc::message::Message>(out: &mut Vec<u8>, id: u32, body: &M) {
    let mut buf = [0u8; 512];
    let n = encode_frame(Some(id), body, &mut buf, u32::MAX).unwrap();
    out.extend_from_slice(&buf[..n]);
}

/// Frames (and of them, attachment frames) read from `s` until `until`; allocation-free: one
/// fixed buffer, frames cut by their 8-byte headers.
fn read_frames(s: &mut TcpStream, buf: &mut [u8], until: Instant) -> (u64, u64) {
    let (mut frames, mut attached) = (0, 0);
    let mut have = 0;
    while Instant::now() < until {
        match s.read(&mut buf[have..]) {
            Ok(0) => panic!("the engine closed (or the buffer is full)"),
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("{e}"),
        }
        let mut at = 0;
        while have - at >= 8 {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            if have - at < 8 + len {
                break;
            }
            frames += 1;
            attached += u64::from(buf[at + 5] & 0x01);
            at += 8 + len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    (frames, attached)
}

fn session(rig: &Rig, attachments: bool) -> TcpStream {
    let mut s = TcpStream::connect(rig.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut out = PREFACE.to_vec();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        client: heapless::String::try_from("alloc-test").unwrap(),
        token: None,
        attachments,
    };
    put(&mut out, 1, &hello);
    for (i, (stream, tap, size)) in [
        (AnalysisStream::Spectrum, 0, 1024),
        (AnalysisStream::Spectrum, 1, 4096),
        (AnalysisStream::Scope, 0, 512),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = SubscribeAnalysis {
            stream,
            tap,
            size,
            rate_hz: 60,
        };
        put(&mut out, 2 + i as u32, &sub);
    }
    let meters = Subscribe {
        stream: Stream::Meters,
        rate_hz: 60,
    };
    put(&mut out, 9, &meters);
    s.write_all(&out).unwrap();
    let mut preface = [0u8; 8];
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.read_exact(&mut preface).unwrap();
    assert_eq!(preface, PREFACE);
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

#[test]
fn analysis_streams_allocate_nothing_in_steady_state() {
    let mut buf = vec![0u8; 1 << 20];
    for attachments in [true, false] {
        let rig = Rig::start(Server::builder());
        let mut s = session(&rig, attachments);
        // Warm-up: FFT plans for 1024 and 4096 bins, first values, the socket's buffers.
        read_frames(
            &mut s,
            &mut buf,
            Instant::now() + Duration::from_millis(600),
        );
        let before = ALLOCS.load(Ordering::Relaxed);
        let (frames, attached) = read_frames(
            &mut s,
            &mut buf,
            Instant::now() + Duration::from_millis(1000),
        );
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!(
            "attachments {attachments}: {frames} frames ({attached} with an attachment), \
             {allocs} allocations"
        );
        // ~60/s for each of 3 analysis subscriptions plus 60/s meters.
        assert!(frames >= 150, "too few frames to measure: {frames}");
        if attachments {
            assert!(attached >= 100, "attachment frames {attached}");
        } else {
            assert_eq!(attached, 0);
        }
        assert_eq!(allocs, 0, "allocations while analysis streams flowed");
        drop(s);
    }
    // Negative control: an allocation on another thread is counted.
    let before = ALLOCS.load(Ordering::Relaxed);
    let t = std::thread::spawn(|| std::hint::black_box(vec![1u8; 100]).len());
    assert_eq!(t.join().unwrap(), 100);
    assert!(ALLOCS.load(Ordering::Relaxed) - before >= 1);
}

//! Non-finite audio never reaches the wire as `null`: JSON has no NaN or infinity.

use loophole_ipc::message::{encode_frame, Meters};
use loophole_ipc::rt::{bridge, RtConfig, RtReply, TransportState};

#[test]
fn non_finite_samples_meter_as_f32_max_and_bpm_as_zero() {
    let (mut audio, mut net) = bridge(&RtConfig::default().with_meter_channels(3));
    let t = TransportState {
        playing: true,
        position: 0,
        bpm: f32::NAN,
        loop_start: 0,
        loop_end: 0,
        loop_enabled: false,
    };
    for _ in 0..3 {
        audio.begin_callback(1_000, 64);
        audio.publish_meters(&[&[0.5, -0.25], &[0.5, f32::NAN], &[f32::INFINITY, 0.0]]);
        audio.publish_transport(&t);
        audio.end_callback(2_000);
        net.collect_meters();
    }
    let (mut peak, mut rms) = ([0.0f32; 3], [0.0f32; 3]);
    assert_eq!(net.take_meters(&mut peak, &mut rms), 3);
    assert_eq!(peak[0], 0.5, "finite channels are untouched");
    assert!(rms[0] > 0.0 && rms[0] < 0.5);
    assert_eq!((peak[1], rms[1]), (f32::MAX, f32::MAX));
    assert_eq!((peak[2], rms[2]), (f32::MAX, f32::MAX));
    let mut body = Meters::default();
    body.peak.extend_from_slice(&peak).unwrap();
    body.rms.extend_from_slice(&rms).unwrap();
    let mut buf = [0u8; 512];
    let n = encode_frame(None, &body, &mut buf, 65_536).unwrap();
    let json = std::str::from_utf8(&buf[8..n]).unwrap();
    assert!(!json.contains("null"), "{json}");
    let mut saw = false;
    while let Some(r) = net.pop_reply() {
        if let RtReply::Transport(t) = r {
            assert_eq!(t.bpm, 0.0);
            saw = true;
        }
    }
    assert!(saw, "transport telemetry arrived");
}

/// Negative control: without the guard, serde-json-core writes a NaN as `null`, which is what the
/// guard prevents.
#[test]
fn negative_control_nan_encodes_as_null() {
    let mut body = Meters::default();
    body.peak.push(f32::NAN).unwrap();
    body.rms.push(0.0).unwrap();
    let mut buf = [0u8; 128];
    let n = encode_frame(None, &body, &mut buf, 65_536).unwrap();
    assert!(std::str::from_utf8(&buf[8..n]).unwrap().contains("null"));
}

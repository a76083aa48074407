//! Transport telemetry from C follows the spec (`docs/specs/ipc/envelope.md`, `transport.state`:
//! "`bpm` number (0 if the engine's tempo is not finite)"), as from a Rust engine: a non-finite
//! tempo is published and goes out as 0 with the position, instead of the whole update being
//! refused (an engine whose tempo went NaN would freeze the UI's play head without a trace).
//! Negative control: a struct of the wrong size is still refused and publishes nothing.

use loophole_ipc::rt::{bridge, RtConfig, RtReply};
use loophole_ipc_capi::*;

fn transport(bpm: f32, position: u64) -> LoopholeTransport {
    let mut t = std::mem::MaybeUninit::<LoopholeTransport>::uninit();
    // SAFETY: a writable transport struct.
    unsafe {
        assert_eq!(loophole_transport_init(t.as_mut_ptr()), LOOPHOLE_OK);
        let mut t = t.assume_init();
        t.bpm = bpm;
        t.position = position;
        t.playing = 1;
        t
    }
}

#[test]
fn a_non_finite_tempo_is_published_as_0_like_the_rust_endpoint() {
    let (audio, mut net) = bridge(&RtConfig::default());
    let audio = testing::wrap_audio(audio);
    let mut small = transport(120.0, 7);
    small.struct_size = 4;
    // SAFETY: a live handle used by this thread only; valid transport structs.
    let published = unsafe {
        loophole_audio_begin(audio, 0, 64);
        let nan = loophole_audio_publish_transport(audio, &transport(f32::NAN, 480));
        let inf = loophole_audio_publish_transport(audio, &transport(f32::INFINITY, 544));
        let refused = loophole_audio_publish_transport(audio, &small);
        loophole_audio_end(audio, 1000);
        [nan, inf, refused]
    };
    let mut got = Vec::new();
    while let Some(r) = net.pop_reply() {
        if let RtReply::Transport(t) = r {
            got.push((t.bpm, t.position, t.playing));
        }
    }
    // SAFETY: from wrap_audio, freed once.
    unsafe { loophole_audio_free(audio) };
    assert_eq!(published, [true, true, false], "NaN, inf, short struct");
    assert_eq!(got, [(0.0, 480, true), (0.0, 544, true)]);
}

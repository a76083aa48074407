//! The interleaved meter entry point (computed in capi, not in the Rust endpoint) reports the
//! same peak and RMS per channel as the planar one (which forwards to `publish_meter`), for
//! channels with different signals; a channel beyond the configured count is ignored. The
//! negative control swaps two channels of the interleaved input and must change the result.

use loophole_ipc::rt::{bridge, NetEndpoint, RtConfig};
use loophole_ipc_capi::*;

const CH: usize = 3;
const FRAMES: usize = 50;

fn signal(ch: usize, i: usize) -> f32 {
    ((i as f32 * 0.3 + ch as f32).sin()) * (ch as f32 + 1.0) * 0.2
}

/// Publishes one block (over several callbacks) and returns (peak, rms) per channel.
fn levels(publish: impl Fn(*mut LoopholeAudio)) -> Vec<(f32, f32)> {
    let (audio, mut net) = bridge(&RtConfig::default().with_meter_channels(CH));
    let audio = testing::wrap_audio(audio);
    let mut out = (vec![0.0; CH], vec![0.0; CH]);
    let cb = |net: &mut NetEndpoint, body: &dyn Fn()| {
        // SAFETY: a live handle used by this thread only.
        unsafe { loophole_audio_begin(audio, 0, FRAMES as u32) };
        body();
        // SAFETY: as above.
        unsafe { loophole_audio_end(audio, 1000) };
        net.collect_meters();
    };
    cb(&mut net, &|| {});
    cb(&mut net, &|| publish(audio));
    cb(&mut net, &|| {});
    assert_eq!(net.take_meters(&mut out.0, &mut out.1), CH);
    // SAFETY: from wrap_audio, freed once.
    unsafe { loophole_audio_free(audio) };
    out.0.into_iter().zip(out.1).collect()
}

fn interleaved(swap: bool) -> Vec<(f32, f32)> {
    // One extra channel in the input (stride CH + 1): beyond the configured count, ignored.
    let stride = CH + 1;
    let mut buf = vec![0.0f32; stride * FRAMES];
    for i in 0..FRAMES {
        for ch in 0..stride {
            let src = if swap && ch < 2 { 1 - ch } else { ch };
            buf[i * stride + ch] = signal(src, i);
        }
    }
    levels(move |a| {
        // SAFETY: `buf` holds stride × FRAMES floats.
        unsafe {
            loophole_audio_publish_meters_interleaved(a, buf.as_ptr(), stride as u32, FRAMES as u32)
        }
    })
}

fn planar() -> Vec<(f32, f32)> {
    let chans: Vec<Vec<f32>> = (0..CH)
        .map(|ch| (0..FRAMES).map(|i| signal(ch, i)).collect())
        .collect();
    levels(move |a| {
        let ptrs: Vec<*const f32> = chans.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: CH pointers to FRAMES floats each.
        unsafe { loophole_audio_publish_meters(a, ptrs.as_ptr(), CH as u32, FRAMES as u32) }
    })
}

fn close(a: &[(f32, f32)], b: &[(f32, f32)]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x.0 - y.0).abs() < 1e-6 && (x.1 - y.1).abs() < 1e-5)
}

#[test]
fn interleaved_meters_equal_planar_meters() {
    let (p, i) = (planar(), interleaved(false));
    println!("planar {p:?}\ninterleaved {i:?}");
    assert!(
        p.iter().all(|&(peak, rms)| peak > 0.1 && rms > 0.05),
        "{p:?}"
    );
    assert!(close(&p, &i), "planar {p:?} != interleaved {i:?}");
}

#[test]
fn negative_control_swapped_channels_differ() {
    assert!(!close(&planar(), &interleaved(true)));
}

/// One channel of `level` in every frame, through the interleaved entry point: (peak, rms).
fn interleaved_constant(level: f32) -> (f32, f32) {
    let buf = vec![level; FRAMES * CH];
    levels(move |a| {
        // SAFETY: `buf` holds CH × FRAMES floats.
        unsafe {
            loophole_audio_publish_meters_interleaved(a, buf.as_ptr(), CH as u32, FRAMES as u32)
        }
    })[0]
}

/// The same signal through the planar entry point (the Rust meters: `f64` sums).
fn planar_constant(level: f32) -> (f32, f32) {
    let chans: Vec<Vec<f32>> = (0..CH).map(|_| vec![level; FRAMES]).collect();
    levels(move |a| {
        let ptrs: Vec<*const f32> = chans.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: CH pointers to FRAMES floats each.
        unsafe { loophole_audio_publish_meters(a, ptrs.as_ptr(), CH as u32, FRAMES as u32) }
    })[0]
}

/// Regression (fails on main, where the interleaved path summed x² in `f32`): a loud but
/// finite signal (1e20, x² = 1e40 > f32::MAX) has a finite RMS instead of the fault marker
/// `f32::MAX`, and a quiet one (1e-23, x² below the smallest f32 subnormal) keeps its RMS
/// instead of 0, as on the planar path (`src/rt/meters.rs`: `loud_finite_signal_is_not_a_fault`,
/// `quiet_signal_keeps_its_rms`). Negative control: a real infinite sample still gives the
/// fault marker on both paths.
#[test]
fn interleaved_meters_keep_loud_and_quiet_levels_like_planar() {
    for level in [1e20f32, 1e-23] {
        let (p, i) = (planar_constant(level), interleaved_constant(level));
        println!("level {level:e}: planar {p:?}, interleaved {i:?}");
        assert_eq!(p.0, level, "planar peak");
        assert!((p.1 / level - 1.0).abs() < 1e-5, "planar rms {p:?}");
        assert_eq!(i.0, level, "interleaved peak");
        assert!(
            (i.1 / level - 1.0).abs() < 1e-5,
            "interleaved rms of a constant {level:e}: {} (planar {})",
            i.1,
            p.1
        );
    }
    let fault = (f32::MAX, f32::MAX);
    assert_eq!(planar_constant(f32::INFINITY), fault);
    assert_eq!(interleaved_constant(f32::INFINITY), fault);
}

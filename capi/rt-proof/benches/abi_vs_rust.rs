//! The C++ callback through the C ABI vs the Rust endpoint called directly, on the same work
//! per callback: 16 `param.set` commands pushed by the network side and drained (applied by a
//! C++ lambda through the noexcept trampoline, resp. a Rust closure), 64 channels × 64 frames of
//! planar meters, begin/end; the network side then pops the 16 answers. Same bridge type, same
//! capacities, same process, interleaved rounds; the figure is the ratio of the best round of
//! each (time per callback). Target: ≤ 1.1×.
//!
//! `cargo bench -p loophole-ipc-capi-rt --bench abi_vs_rust`

use std::hint::black_box;
use std::time::Instant;

use loophole_ipc::rt::{
    bridge, AudioEndpoint, NetEndpoint, Outcome, RejectReason, RtCommand, RtConfig, RtOp,
};
use loophole_ipc_capi::{loophole_audio_free, testing, LoopholeAudio};

const CHANNELS: usize = 64;
const FRAMES: usize = 64;
const COMMANDS: u32 = 16;
const ITERS: u64 = 20_000;
const ROUNDS: usize = 7;

fn cfg() -> RtConfig {
    RtConfig::default()
        .with_command_capacity(64)
        .with_reply_capacity(64)
        .with_drain_budget(16)
        .with_meter_channels(CHANNELS)
}

fn push(net: &mut NetEndpoint, base: u32) {
    for i in 0..COMMANDS {
        let value = if i == 7 { 9.0 } else { 0.5 };
        let op = RtOp::ParamSet {
            node: 2,
            param: 0,
            value,
            ramp_ms: 0.0,
        };
        net.try_send(RtCommand { id: base + i, op }).expect("room");
    }
}

fn pop(net: &mut NetEndpoint) -> u32 {
    let mut n = 0;
    while let Some(r) = net.pop_reply() {
        n += u32::from(r.answers().is_some());
    }
    n
}

#[inline(never)]
fn rust_round(
    audio: &mut AudioEndpoint,
    net: &mut NetEndpoint,
    blocks: &[Vec<f32>],
    iters: u64,
) -> f64 {
    let chans: Vec<&[f32]> = blocks.iter().map(Vec::as_slice).collect();
    let mut gain = 0.5f32;
    let t = Instant::now();
    for i in 0..iters {
        push(net, i as u32);
        audio.begin_callback(i * 1_000_000, FRAMES as u32);
        let n = audio.drain(|cmd| match cmd.op {
            RtOp::ParamSet { node: 2, value, .. } if (0.0..=4.0).contains(&value) => {
                gain = value;
                Outcome::Applied
            }
            RtOp::ParamSet { node: 2, .. } => Outcome::Rejected(RejectReason::OutOfRange),
            _ => Outcome::Rejected(RejectReason::UnknownNode),
        });
        audio.publish_meters(black_box(&chans));
        audio.end_callback(i * 1_000_000 + 1000);
        assert_eq!(n as u32, COMMANDS);
        assert_eq!(pop(net), COMMANDS);
    }
    black_box(gain);
    t.elapsed().as_nanos() as f64 / iters as f64
}

#[inline(never)]
fn abi_round(
    audio: *mut LoopholeAudio,
    net: &mut NetEndpoint,
    ptrs: &[*const f32],
    iters: u64,
) -> f64 {
    let t = Instant::now();
    for i in 0..iters {
        push(net, i as u32);
        // SAFETY: a live handle used by this thread only; `ptrs` has CHANNELS pointers to
        // FRAMES floats each.
        let n = unsafe {
            loophole_ipc_capi_rt::cpp_callback(
                audio,
                black_box(ptrs.as_ptr()),
                CHANNELS as u32,
                FRAMES as u32,
                i * 1_000_000,
            )
        };
        assert_eq!(n, COMMANDS);
        assert_eq!(pop(net), COMMANDS);
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn main() {
    let blocks: Vec<Vec<f32>> = (0..CHANNELS)
        .map(|c| (0..FRAMES).map(|i| ((i + c) as f32 * 0.01).sin()).collect())
        .collect();
    let ptrs: Vec<*const f32> = blocks.iter().map(|b| b.as_ptr()).collect();
    let (mut rust_audio, mut rust_net) = bridge(&cfg());
    let (abi_audio, mut abi_net) = bridge(&cfg());
    let abi_audio = testing::wrap_audio(abi_audio);
    // Under callgrind (scripts/test.d/30-capi.sh): one side only, `ABI_BENCH_ONLY=rust|abi`,
    // counted with --toggle-collect on its round function.
    if let Ok(only) = std::env::var("ABI_BENCH_ONLY") {
        let iters = 2_000;
        match only.as_str() {
            "rust" => black_box(rust_round(&mut rust_audio, &mut rust_net, &blocks, iters)),
            "abi" => black_box(abi_round(abi_audio, &mut abi_net, &ptrs, iters)),
            other => panic!("ABI_BENCH_ONLY={other}: rust or abi"),
        };
        return;
    }
    let (mut best_rust, mut best_abi) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        best_rust = best_rust.min(rust_round(&mut rust_audio, &mut rust_net, &blocks, ITERS));
        best_abi = best_abi.min(abi_round(abi_audio, &mut abi_net, &ptrs, ITERS));
    }
    // SAFETY: from wrap_audio, freed once.
    unsafe { loophole_audio_free(abi_audio) };
    let ratio = best_abi / best_rust;
    println!(
        "abi_vs_rust: per callback (16 commands + {CHANNELS} ch x {FRAMES} frames meters, incl. the \
         network side's push/pop): Rust endpoint {best_rust:.0} ns, C++ through the C ABI \
         {best_abi:.0} ns, ratio {ratio:.3}x (target <= 1.1x; best of {ROUNDS} rounds x {ITERS})"
    );
}

//! The engine's DSP graph — oscillator → gain → meter — and its transport.
//!
//! Runs on the audio thread: after [`Graph::new`] nothing here allocates, locks or makes a
//! system call. The graph is fixed; the control thread's model graph (see `signal.rs`) records
//! graph edits without changing what is rendered.

use std::ops::RangeInclusive;

use loophole_ipc::rt::{Outcome, RejectReason, RtOp, TransportState};

/// Node 1: the sine oscillator.
pub const NODE_OSC: u32 = 1;
/// Node 2: the gain stage.
pub const NODE_GAIN: u32 = 2;
/// Node 3: the meter (no parameters).
pub const NODE_METER: u32 = 3;
/// Parameter 0 of the oscillator: frequency in Hz.
pub const PARAM_FREQ: u32 = 0;
/// Parameter 0 of the gain: linear gain.
pub const PARAM_GAIN: u32 = 0;
/// Accepted oscillator frequencies, Hz.
pub const FREQ_RANGE: RangeInclusive<f32> = 1.0..=20_000.0;
/// Accepted linear gains (0 = silence, 1 = unity, 4 ≈ +12 dB).
pub const GAIN_RANGE: RangeInclusive<f32> = 0.0..=4.0;
/// Initial oscillator frequency, Hz.
pub const DEFAULT_FREQ: f32 = 440.0;
/// Initial gain.
pub const DEFAULT_GAIN: f32 = 0.5;

/// A linear parameter ramp, advanced one sample at a time.
#[derive(Clone, Copy, Debug)]
struct Ramp {
    value: f32,
    target: f32,
    step: f32,
    left: u32,
}

impl Ramp {
    const fn new(value: f32) -> Self {
        Self {
            value,
            target: value,
            step: 0.0,
            left: 0,
        }
    }

    /// Ramps to `target` over `samples` samples (0: jump).
    fn set(&mut self, target: f32, samples: u32) {
        self.target = target;
        self.left = samples;
        if samples == 0 {
            self.value = target;
            self.step = 0.0;
        } else {
            self.step = (target - self.value) / samples as f32;
        }
    }

    #[inline]
    fn tick(&mut self) -> f32 {
        if self.left > 0 {
            self.left -= 1;
            self.value = if self.left == 0 {
                self.target
            } else {
                self.value + self.step
            };
        }
        self.value
    }
}

/// Levels of one rendered block: what the meter node measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Levels {
    /// max |x|.
    pub peak: f32,
    /// Σx².
    pub sum_sq: f64,
}

/// The fixed graph and the transport.
#[derive(Debug)]
pub struct Graph {
    sample_rate: f32,
    freq: Ramp,
    gain: Ramp,
    /// Oscillator phase in cycles, `0.0..1.0`.
    phase: f32,
    transport: TransportState,
    block: Box<[f32]>,
}

impl Graph {
    /// Allocates the block buffer (`max_block` samples): the only allocation.
    pub fn new(sample_rate: u32, max_block: usize) -> Self {
        Self {
            sample_rate: sample_rate.max(1) as f32,
            freq: Ramp::new(DEFAULT_FREQ),
            gain: Ramp::new(DEFAULT_GAIN),
            phase: 0.0,
            transport: TransportState::default(),
            block: vec![0.0; max_block.max(1)].into_boxed_slice(),
        }
    }

    /// The samples of the last rendered block (`frames` of [`render`](Self::render)).
    pub fn block(&self, frames: usize) -> &[f32] {
        &self.block[..frames.min(self.block.len())]
    }

    /// The transport as of the end of the last rendered block.
    pub fn transport(&self) -> &TransportState {
        &self.transport
    }

    /// Applies one command from the network thread. Wait-free; never allocates.
    pub fn apply(&mut self, op: &RtOp) -> Outcome {
        let t = &mut self.transport;
        match *op {
            RtOp::Play => t.playing = true,
            RtOp::Stop => t.playing = false,
            RtOp::Seek { position } => t.position = position,
            RtOp::Tempo { bpm } if bpm.is_finite() && (20.0..=999.0).contains(&bpm) => t.bpm = bpm,
            RtOp::Tempo { .. } => return Outcome::Rejected(RejectReason::OutOfRange),
            RtOp::Loop {
                start,
                end,
                enabled,
            } if !enabled || end > start => {
                (t.loop_start, t.loop_end, t.loop_enabled) = (start, end, enabled);
            }
            RtOp::Loop { .. } => return Outcome::Rejected(RejectReason::OutOfRange),
            RtOp::ParamSet {
                node,
                param,
                value,
                ramp_ms,
            } => return self.set_param(node, param, value, ramp_ms),
            // Answered by the endpoint itself; never reaches the graph.
            RtOp::Ping { .. } => {}
        }
        Outcome::Applied
    }

    fn set_param(&mut self, node: u32, param: u32, value: f32, ramp_ms: f32) -> Outcome {
        let (ramp, range) = match (node, param) {
            (NODE_OSC, PARAM_FREQ) => (&mut self.freq, FREQ_RANGE),
            (NODE_GAIN, PARAM_GAIN) => (&mut self.gain, GAIN_RANGE),
            (NODE_OSC | NODE_GAIN | NODE_METER, _) => {
                return Outcome::Rejected(RejectReason::UnknownParam)
            }
            _ => return Outcome::Rejected(RejectReason::UnknownNode),
        };
        if !(range.contains(&value) && ramp_ms.is_finite() && ramp_ms >= 0.0) {
            return Outcome::Rejected(RejectReason::OutOfRange);
        }
        // `as` saturates: a huge ramp is simply very long.
        let samples = (f64::from(ramp_ms) * f64::from(self.sample_rate) / 1000.0).round() as u32;
        ramp.set(value, samples);
        Outcome::Applied
    }

    /// Renders `frames` samples (at most the buffer size), advances the transport while it plays
    /// and returns the block's levels. Silence while the transport is stopped; ramps keep moving.
    pub fn render(&mut self, frames: usize) -> Levels {
        let frames = frames.min(self.block.len());
        let playing = self.transport.playing;
        let inv_rate = 1.0 / self.sample_rate;
        let mut levels = Levels::default();
        let mut sum = 0.0f32;
        for s in &mut self.block[..frames] {
            let freq = self.freq.tick();
            let gain = self.gain.tick();
            let x = if playing {
                let x = (self.phase * std::f32::consts::TAU).sin() * gain;
                self.phase += freq * inv_rate;
                self.phase -= self.phase.floor();
                x
            } else {
                0.0
            };
            *s = x;
            levels.peak = levels.peak.max(x.abs());
            sum += x * x;
        }
        levels.sum_sq = f64::from(sum);
        if playing {
            self.advance(frames as u64);
        }
        levels
    }

    fn advance(&mut self, frames: u64) {
        let t = &mut self.transport;
        // envelope.md: the position stops at 2^53 - 1 (clamps), so every transport.state is exact
        // as a JavaScript number and valid against its schema.
        t.position = t
            .position
            .saturating_add(frames)
            .min(loophole_ipc::message::MAX_SAFE_INTEGER);
        if t.loop_enabled && t.loop_end > t.loop_start && t.position >= t.loop_end {
            t.position = t.loop_start + (t.position - t.loop_end) % (t.loop_end - t.loop_start);
        }
    }
}

/// Frequency of the test tone on tap 2, Hz.
pub const TEST_TONE_HZ: f64 = 1000.0;
/// Amplitude of the test tone on tap 2 (0.5 = −6.02 dBFS).
pub const TEST_TONE_AMPLITUDE: f32 = 0.5;

/// A fixed sine, always on (whatever the transport), for tap 2: a known signal to check the
/// analysis streams against. The phase is kept in `f64` cycles so it stays exact for hours.
#[derive(Debug)]
pub struct TestTone {
    step: f64,
    phase: f64,
    block: Box<[f32]>,
}

impl TestTone {
    /// Allocates the block buffer (`max_block` samples): the only allocation.
    pub fn new(sample_rate: u32, max_block: usize) -> Self {
        Self {
            step: TEST_TONE_HZ / f64::from(sample_rate.max(1)),
            phase: 0.0,
            block: vec![0.0; max_block.max(1)].into_boxed_slice(),
        }
    }

    /// Renders `frames` samples of the tone. Wait-free; no allocation.
    pub fn render(&mut self, frames: usize) -> &[f32] {
        let frames = frames.min(self.block.len());
        for s in &mut self.block[..frames] {
            *s = TEST_TONE_AMPLITUDE * (self.phase * std::f64::consts::TAU).sin() as f32;
            self.phase += self.step;
            self.phase -= self.phase.floor();
        }
        &self.block[..frames]
    }
}

//! The engine's analysis worker: computes the `scope` and `spectrum` streams from the taps, off
//! the audio thread.
//!
//! The audio thread only publishes each block into its taps (wait-free). This thread drains
//! every tap a request names into a history of its own (so `missed` counts exactly the samples
//! the tap overwrote before they were read), and at each request's rate computes:
//!
//! - `scope`: the most recent `points × samples_per_point` samples, min and max per point,
//!   `samples_per_point` = ⌈sample_rate / (rate × points)⌉ (the window covers the time since the
//!   previous frame), at most the history divided by `points`;
//! - `spectrum`: a periodic Hann window over the most recent `2 × bins` samples, a real FFT
//!   (`realfft`), dBFS per bin k = 0 … bins − 1 normalised so that a full-scale sine at a bin
//!   centre reads 0 dB: |X_k| × 2 / Σw (DC: × 1), floored at −160 dB.
//!
//! Allocation: the histories at start; an FFT plan and its buffers the first time a size is
//! asked for (at most 9 sizes, 16 … 4096 bins), kept for the worker's life; nothing per frame.
//! May block: it sleeps between frames (never holding anything the other threads need).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loophole_ipc::net::AnalysisWorker;
use loophole_ipc::rt::analysis::{
    AnalysisFrame, AnalysisRequest, AnalysisStream, MAX_ANALYSIS_SLOTS, MAX_ANALYSIS_VALUES,
};
use loophole_ipc::rt::TapReader;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Lowest level a spectrum bin reports, dBFS (envelope.md: never −∞).
pub const FLOOR_DB: f32 = -160.0;
/// Longest the worker sleeps with nothing due, so a new subscription starts within it.
pub const IDLE_POLL: Duration = Duration::from_millis(10);
/// Largest sample a scope reports (a non-finite sample becomes ± this, so the JSON stays valid).
const SAMPLE_LIMIT: f32 = f32::MAX;

/// Min and max of each of `min.len()` consecutive runs of `samples`
/// (`samples.len() / points` samples each; any remainder at the front is left out).
pub fn scope(samples: &[f32], min: &mut [f32], max: &mut [f32]) {
    let points = min.len().min(max.len());
    if points == 0 {
        return;
    }
    let per = samples.len() / points;
    let samples = &samples[samples.len() - per * points..];
    for (i, run) in samples.chunks_exact(per.max(1)).take(points).enumerate() {
        let (lo, hi) = run
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        // A run of NaNs only: report 0 (no level) rather than an inverted pair.
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        min[i] = lo.clamp(-SAMPLE_LIMIT, SAMPLE_LIMIT);
        max[i] = hi.clamp(-SAMPLE_LIMIT, SAMPLE_LIMIT);
    }
}

/// An FFT of one size with its window and buffers (allocated once, in [`Spectrum::new`]).
pub struct Spectrum {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    output: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// 2 / Σw: turns |X_k| into the amplitude of a sine at bin k.
    gain: f32,
}

impl Spectrum {
    /// A `bins`-bin analyser: an FFT of `2 × bins` samples.
    pub fn new(planner: &mut RealFftPlanner<f32>, bins: usize) -> Self {
        let n = 2 * bins.max(1);
        let fft = planner.plan_fft_forward(n);
        // Periodic Hann: Σw = n / 2 exactly, and a sine at a bin centre leaks into no bin but
        // its two neighbours.
        let window: Vec<f32> = (0..n)
            .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos() as f32)
            .collect();
        let sum: f64 = window.iter().map(|&w| f64::from(w)).sum();
        Self {
            input: fft.make_input_vec(),
            output: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            gain: (2.0 / sum) as f32,
            window,
            fft,
        }
    }

    /// dBFS of each bin of `samples` (`2 × bins` of them) into `db` (`bins` values).
    pub fn compute(&mut self, samples: &[f32], db: &mut [f32]) {
        for ((x, &s), &w) in self.input.iter_mut().zip(samples).zip(&self.window) {
            *x = if s.is_finite() { s * w } else { 0.0 };
        }
        // Lengths come from the plan itself: process cannot fail.
        let _ = self
            .fft
            .process_with_scratch(&mut self.input, &mut self.output, &mut self.scratch);
        for (k, (out, x)) in db.iter_mut().zip(&self.output).enumerate() {
            let gain = if k == 0 { self.gain / 2.0 } else { self.gain };
            let amplitude = x.norm() * gain;
            let level = 20.0 * amplitude.log10();
            *out = if level.is_nan() {
                FLOOR_DB
            } else {
                level.clamp(FLOOR_DB, 1000.0)
            };
        }
    }
}

/// The recent samples of one tap, drained from its ring by this thread.
struct History {
    buf: Vec<f32>,
    /// Tap stream index after the newest sample.
    end: u64,
    /// Samples the tap overwrote before this thread read them, since the start.
    overrun: u64,
}

impl History {
    fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0.0; capacity.next_power_of_two()],
            end: 0,
            overrun: 0,
        }
    }

    /// Drains what the tap published since the last call. Bounded: one ring's worth.
    fn fill(&mut self, taps: &mut TapReader, tap: usize, chunk: &mut [f32]) {
        let mask = self.buf.len() - 1;
        let mut left = taps.capacity() + chunk.len();
        while left > 0 {
            let Ok(got) = taps.read(tap, chunk) else {
                return;
            };
            self.overrun += got.missed;
            for (i, &x) in chunk[..got.samples].iter().enumerate() {
                self.buf[(got.first as usize + i) & mask] = x;
            }
            self.end = got.first + got.samples as u64;
            left = left.saturating_sub(got.samples.max(1));
            if got.samples < chunk.len() {
                return;
            }
        }
    }

    /// Copies the newest `out.len()` samples into `out`; false if fewer were published yet.
    fn latest(&self, out: &mut [f32]) -> bool {
        let n = out.len() as u64;
        if self.end < n || out.len() > self.buf.len() {
            return false;
        }
        let mask = self.buf.len() - 1;
        let first = self.end - n;
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.buf[(first as usize + i) & mask];
        }
        true
    }
}

/// Per-slot schedule and accounting.
#[derive(Clone, Copy, Default)]
struct SlotState {
    generation: Option<u32>,
    next_due: Option<Instant>,
    /// The tap's overrun count at this slot's previous frame.
    overrun_seen: u64,
}

/// The worker thread's state: the taps, their histories, the FFT plans.
pub struct Analyzer {
    taps: TapReader,
    sample_rate: u32,
    histories: Vec<History>,
    chunk: Vec<f32>,
    window: Vec<f32>,
    values: Vec<f32>,
    planner: RealFftPlanner<f32>,
    spectra: HashMap<u16, Spectrum>,
    slots: [SlotState; MAX_ANALYSIS_SLOTS],
    /// Frames submitted, over the worker's life.
    pub submitted: u64,
}

impl Analyzer {
    /// Allocates one history per tap (as long as the tap's ring) and the work buffers.
    pub fn new(taps: TapReader, sample_rate: u32) -> Self {
        let capacity = taps.capacity();
        Self {
            histories: (0..taps.taps()).map(|_| History::new(capacity)).collect(),
            chunk: vec![0.0; 4096.min(capacity)],
            window: vec![0.0; capacity],
            values: vec![0.0; MAX_ANALYSIS_VALUES],
            planner: RealFftPlanner::new(),
            spectra: HashMap::new(),
            slots: [SlotState::default(); MAX_ANALYSIS_SLOTS],
            submitted: 0,
            taps,
            sample_rate: sample_rate.max(1),
        }
    }

    /// Serves every request due at `now`; returns when to come back.
    pub fn step(&mut self, worker: &mut AnalysisWorker, now: Instant) -> Instant {
        let mut wake = now + IDLE_POLL;
        let mut active = [false; MAX_ANALYSIS_SLOTS];
        let requests: [Option<AnalysisRequest>; MAX_ANALYSIS_SLOTS] = {
            let mut all = [None; MAX_ANALYSIS_SLOTS];
            for r in worker.requests() {
                all[r.slot] = Some(r);
            }
            all
        };
        for req in requests.iter().flatten() {
            active[req.slot] = true;
            if self.slots[req.slot].generation != Some(req.generation) {
                self.slots[req.slot] = SlotState {
                    generation: Some(req.generation),
                    next_due: Some(now),
                    overrun_seen: self.drained_overrun(usize::from(req.tap)),
                };
            }
            let due = self.slots[req.slot].next_due.unwrap_or(now);
            if due <= now {
                let interval = Duration::from_secs(1) / u32::from(req.rate_hz.max(1));
                if self.serve(worker, req) {
                    self.slots[req.slot].next_due = Some((due + interval).max(now));
                } else {
                    // Not enough samples yet: look again soon.
                    self.slots[req.slot].next_due = Some(now + IDLE_POLL);
                }
            }
            wake = wake.min(self.slots[req.slot].next_due.unwrap_or(wake));
        }
        for (state, active) in self.slots.iter_mut().zip(active) {
            if !active {
                *state = SlotState::default();
            }
        }
        wake
    }

    /// Drains `tap` and returns its overrun count: where a new subscription's `missed` starts,
    /// so that its first frame counts only what was lost after it began (what the tap overwrote
    /// while nobody watched it is not a loss of this subscription).
    fn drained_overrun(&mut self, tap: usize) -> u64 {
        let Some(history) = self.histories.get_mut(tap) else {
            return 0;
        };
        history.fill(&mut self.taps, tap, &mut self.chunk);
        history.overrun
    }

    /// Computes and submits one value; false if the tap has not published enough yet.
    fn serve(&mut self, worker: &mut AnalysisWorker, req: &AnalysisRequest) -> bool {
        let tap = usize::from(req.tap);
        let Some(history) = self.histories.get_mut(tap) else {
            return false;
        };
        history.fill(&mut self.taps, tap, &mut self.chunk);
        let n = usize::from(req.size);
        let (window_len, param) = match req.stream {
            AnalysisStream::Scope => {
                let per_frame = self.sample_rate.div_ceil(u32::from(req.rate_hz.max(1)));
                let spp = (per_frame as usize).div_ceil(n.max(1));
                let spp = spp.clamp(1, (self.window.len() / n.max(1)).max(1));
                (spp * n, spp as u32)
            }
            AnalysisStream::Spectrum => (2 * n, self.sample_rate),
        };
        if window_len > self.window.len() {
            return false;
        }
        let window = &mut self.window[..window_len];
        if !history.latest(window) {
            return false;
        }
        let values = &mut self.values[..req.values()];
        match req.stream {
            AnalysisStream::Scope => {
                let (min, max) = values.split_at_mut(n);
                scope(window, min, max);
            }
            AnalysisStream::Spectrum => {
                let planner = &mut self.planner;
                let spectrum = self
                    .spectra
                    .entry(req.size)
                    .or_insert_with(|| Spectrum::new(planner, n));
                spectrum.compute(window, values);
            }
        }
        let state = &mut self.slots[req.slot];
        let frame = AnalysisFrame {
            sample: history.end.saturating_sub(1),
            missed: history.overrun - state.overrun_seen,
            param,
            values,
        };
        state.overrun_seen = history.overrun;
        if worker.submit(req, &frame).is_ok() {
            self.submitted += 1;
        }
        true
    }

    /// Runs until the server is gone or `stop` is set.
    pub fn run(mut self, mut worker: AnalysisWorker, stop: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering;
        while worker.is_connected() && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wake = self.step(&mut worker, now);
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amplitude: f32, rate: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amplitude * (std::f64::consts::TAU * freq * i as f64 / rate).sin() as f32)
            .collect()
    }

    /// The peak bin and its level.
    fn peak(db: &[f32]) -> (usize, f32) {
        db.iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |a, (k, v)| if v > a.1 { (k, v) } else { a },
            )
    }

    #[test]
    fn a_full_scale_sine_at_a_bin_centre_reads_0_db_in_its_bin() {
        let mut planner = RealFftPlanner::new();
        for bins in [16usize, 256, 1024, 4096] {
            let mut s = Spectrum::new(&mut planner, bins);
            let hz_per_bin = 48_000.0 / (2.0 * bins as f64);
            let k = bins / 4;
            let mut db = vec![0.0; bins];
            s.compute(
                &sine(k as f64 * hz_per_bin, 1.0, 48_000.0, 2 * bins),
                &mut db,
            );
            let (at, level) = peak(&db);
            assert_eq!(at, k, "bins {bins}");
            assert!(level.abs() < 0.01, "bins {bins}: {level} dB");
            // Far from the tone: the Hann window's leakage is far below.
            assert!(db[k + 8.min(bins / 4 - 1)] < -60.0 || bins == 16);
        }
    }

    #[test]
    fn a_1_khz_half_scale_sine_peaks_at_its_bin_at_minus_6_db() {
        let mut planner = RealFftPlanner::new();
        let mut s = Spectrum::new(&mut planner, 1024);
        let mut db = vec![0.0; 1024];
        s.compute(&sine(1000.0, 0.5, 48_000.0, 2048), &mut db);
        let (at, level) = peak(&db);
        let expected_bin = 1000.0 / (48_000.0 / 2048.0); // 42.67
        assert!((at as f64 - expected_bin).abs() <= 1.0, "bin {at}");
        // Off the bin centre the Hann window loses up to 1.42 dB; here 0.33 bin off: ~0.6 dB.
        assert!((level - (-6.02)).abs() <= 1.0, "{level} dB");
    }

    #[test]
    fn silence_and_garbage_read_the_floor_never_minus_infinity() {
        let mut planner = RealFftPlanner::new();
        let mut s = Spectrum::new(&mut planner, 16);
        let mut db = vec![0.0; 16];
        s.compute(&[0.0; 32], &mut db);
        assert!(db.iter().all(|&v| v == FLOOR_DB), "{db:?}");
        let mut bad = [0.0f32; 32];
        bad[3] = f32::NAN;
        bad[4] = f32::INFINITY;
        s.compute(&bad, &mut db);
        assert!(db.iter().all(|v| v.is_finite()));
    }

    /// The history counts exactly what the tap overwrote before it was drained (`missed`), and
    /// keeps the newest samples in order.
    #[test]
    fn the_history_counts_what_the_tap_overwrote() {
        let (mut w, mut r) = loophole_ipc::rt::tap::tap_bank(1, 64);
        let mut h = History::new(r.capacity());
        let mut chunk = [0.0f32; 16];
        let ramp = |from: u64, n: u64| (from..from + n).map(|i| i as f32).collect::<Vec<_>>();
        w.publish(0, &ramp(0, 40)).unwrap();
        h.fill(&mut r, 0, &mut chunk);
        assert_eq!((h.end, h.overrun), (40, 0));
        // 200 more before the next drain: the 64-sample ring lost 136 of them.
        for k in 0..5 {
            w.publish(0, &ramp(40 + 40 * k, 40)).unwrap();
        }
        h.fill(&mut r, 0, &mut chunk);
        assert_eq!((h.end, h.overrun), (240, 136));
        let mut last = [0.0f32; 64];
        assert!(h.latest(&mut last));
        assert_eq!(last.to_vec(), ramp(176, 64));
        assert!(!h.latest(&mut [0.0; 65]), "longer than the history");
    }

    #[test]
    fn scope_min_max_bracket_every_sample() {
        let x = sine(440.0, 0.8, 48_000.0, 2000);
        let mut min = [0.0; 100];
        let mut max = [0.0; 100];
        scope(&x, &mut min, &mut max);
        for (i, run) in x.chunks(20).enumerate() {
            for &s in run {
                assert!(min[i] <= s && s <= max[i]);
            }
            assert!(run.contains(&min[i]) && run.contains(&max[i]));
        }
        // The peaks survive decimation.
        let top = max.iter().copied().fold(f32::MIN, f32::max);
        assert!((top - 0.8).abs() < 0.01, "{top}");
        // A non-finite sample is clamped, never sent as inf.
        let mut y = vec![0.0f32; 32];
        y[0] = f32::INFINITY;
        scope(&y, &mut min[..16], &mut max[..16]);
        assert_eq!(max[0], f32::MAX);
    }
}

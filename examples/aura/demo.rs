//! `aura demo`: a scripted session — subscribe, set up, play, sweep a parameter, seek, stop —
//! drawn live in the terminal, then a summary (also as one JSON object with `--json`).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use loophole_ipc::message::{AddNode, Edge, Health, Seek, ServerMessage, Stream, TransportState};
use serde_json::{json, Value};

use crate::link::{Incoming, Link, LinkError};
use crate::report::{fmt_us, latency_summary, Reporter};

/// Node and parameter ids of the `signal` engine (see `signal --help`).
const OSC: u32 = 1;
const GAIN: u32 = 2;
const FREQ: u32 = 0;
const LEVEL: u32 = 0;
/// Meter and transport telemetry rate.
const RATE_HZ: u16 = 30;
/// Meters received this long after an ack reflect only audio rendered after it (the meter
/// interval is one telemetry period, and values are one period old).
const SETTLE: Duration = Duration::from_millis(120);

/// One step of the script.
#[derive(Clone, Copy, Debug)]
enum Action {
    Setup,
    Play,
    Freq(f32, f32),
    Gain(f32, f32),
    Seek(u64),
    Stop,
}

fn script(d: Duration, sample_rate: u32) -> Vec<(Duration, Action, &'static str)> {
    let at = |f: f64| d.mul_f64(f);
    let mut s = vec![
        (
            at(0.0),
            Action::Setup,
            "setting up: subscribe, add a node, set parameters",
        ),
        (at(0.12), Action::Play, "transport.play"),
        (
            at(0.40),
            Action::Gain(0.25, 200.0),
            "gain ramp down to 0.25 over 200 ms",
        ),
        (
            at(0.50),
            Action::Gain(0.5, 200.0),
            "gain ramp up to 0.5 over 200 ms",
        ),
        (
            at(0.60),
            Action::Seek(u64::from(sample_rate) * 10),
            "transport.seek to 0:10",
        ),
        (at(0.65), Action::Freq(440.0, 200.0), "osc back to 440 Hz"),
        (at(0.80), Action::Stop, "transport.stop"),
    ];
    let (from, to) = (0.18, 0.55);
    let steps = ((to - from) * d.as_secs_f64() / 0.1).max(1.0) as usize;
    for i in 0..=steps {
        let x = i as f64 / steps as f64;
        let hz = 220.0 * 4f64.powf(x);
        s.push((
            at(from + x * (to - from)),
            Action::Freq(hz as f32, 100.0),
            "sweeping osc 220 → 880 Hz",
        ));
    }
    s.sort_by_key(|(t, _, _)| *t);
    s
}

/// Which meter values the demo expects now. Frames are judged only once an ack has settled.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Phase {
    /// Before the first subscription is acknowledged.
    #[default]
    Setup,
    /// Stopped (acknowledged); frames received from `.0` on must be silent.
    Stopped(Instant),
    /// Playing (acknowledged); frames received from `.0` on must not be silent.
    Playing(Instant),
    /// A transport change is on its way (sent, not yet acknowledged), or the engine restarted.
    Changing,
}

/// What the demo observed, for the summary.
#[derive(Debug, Default)]
struct Track {
    sample_rate: u32,
    phase: Phase,
    play_frames: u64,
    play_silent: u64,
    play_peak_min: Option<f32>,
    play_peak_max: f32,
    stop_frames: u64,
    stop_nonzero: u64,
    stop_peak_max: f32,
    transitional: u64,
    last_transport: Option<(TransportState, Instant)>,
    pos_delta: u64,
    wall: f64,
    seek_target: Option<u64>,
    seek_acked: bool,
    position_after_seek: Option<u64>,
    // live view
    meters: (Vec<f32>, Vec<f32>),
    transport: Option<TransportState>,
    health: Option<Health>,
}

impl Track {
    fn observe(&mut self, inc: &Incoming) {
        match inc {
            Incoming::Answer {
                name,
                result: Ok(_),
                ..
            } => self.acked(name),
            Incoming::Answer { .. } => {}
            Incoming::Telemetry(msg, at) => self.telemetry(msg, *at),
            Incoming::Analysis(..) => {} // the demo does not subscribe to analysis streams
            Incoming::Resumed => {
                // A new engine starts stopped; the state re-sent by the link moves us on.
                if self.phase != Phase::Setup {
                    self.phase = Phase::Changing;
                }
                self.last_transport = None;
            }
        }
    }

    fn acked(&mut self, name: &str) {
        let settled = Instant::now() + SETTLE;
        match name {
            "telemetry.subscribe" if self.phase == Phase::Setup => {
                self.phase = Phase::Stopped(settled);
            }
            "transport.play" => self.phase = Phase::Playing(settled),
            "transport.stop" => self.phase = Phase::Stopped(settled),
            "transport.seek" => self.seek_acked = true,
            _ => {}
        }
    }

    fn telemetry(&mut self, msg: &ServerMessage, at: Instant) {
        match msg {
            ServerMessage::Meters(m) => {
                self.meters_frame(&m.peak, at);
                self.meters = (m.peak.to_vec(), m.rms.to_vec());
            }
            ServerMessage::Transport(t) => {
                self.transport_frame(t, at);
                self.transport = Some(*t);
            }
            ServerMessage::Health(h) => self.health = Some(*h),
            _ => {}
        }
    }

    fn meters_frame(&mut self, peak: &[f32], at: Instant) {
        let lo = peak.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = peak.iter().copied().fold(0.0f32, f32::max);
        if matches!(self.phase, Phase::Playing(s) if at >= s) {
            self.play_frames += 1;
            self.play_silent += u64::from(lo <= 0.0);
            self.play_peak_min = Some(self.play_peak_min.map_or(lo, |m| m.min(lo)));
            self.play_peak_max = self.play_peak_max.max(hi);
        } else if matches!(self.phase, Phase::Stopped(s) if at >= s) {
            self.stop_frames += 1;
            self.stop_nonzero += u64::from(hi > 0.0);
            self.stop_peak_max = self.stop_peak_max.max(hi);
        } else {
            self.transitional += 1;
        }
    }

    /// Position advance vs wall time over consecutive playing frames; jumps (seek, loop) are
    /// left out: a pair whose rate is negative or above 3× the sample rate.
    fn transport_frame(&mut self, t: &TransportState, at: Instant) {
        // The first position at or past the seek target once the seek is acknowledged (an
        // engine that ignored the seek never gets there within the demo).
        if let (Some(target), true, None) =
            (self.seek_target, self.seek_acked, self.position_after_seek)
        {
            if t.position >= target {
                self.position_after_seek = Some(t.position);
            }
        }
        if let Some((prev, when)) = self.last_transport {
            let dt = at.duration_since(when).as_secs_f64();
            if prev.playing && t.playing && t.position >= prev.position && dt > 0.0 {
                let dp = t.position - prev.position;
                if (dp as f64) / dt <= 3.0 * f64::from(self.sample_rate) {
                    self.pos_delta += dp;
                    self.wall += dt;
                }
            }
        }
        self.last_transport = Some((*t, at));
    }
}

/// Runs the demo for `duration`; prints the summary. Returns the error that ended it early.
pub fn run(link: &mut Link, duration: Duration, report: Reporter) -> Result<(), LinkError> {
    let sample_rate = link.welcome().sample_rate;
    let mut track = Track {
        sample_rate,
        ..Track::default()
    };
    let tty = std::io::stdout().is_terminal();
    let mut view = View::new(tty, !report.json);
    let started = Instant::now();
    let end = started + duration;
    let steps = script(duration, sample_rate);
    let mut next = 0;
    let mut label = "";
    let mut inbox = Vec::new();
    let outcome = (|| loop {
        let now = Instant::now();
        while next < steps.len() && started + steps[next].0 <= now {
            label = steps[next].2;
            act(link, &mut track, steps[next].1)?;
            next += 1;
        }
        if now >= end {
            return Ok(());
        }
        let step_at = steps.get(next).map_or(end, |s| started + s.0);
        link.poll(
            (now + Duration::from_millis(50)).min(step_at).min(end),
            &mut inbox,
        )?;
        for inc in inbox.drain(..) {
            track.observe(&inc);
        }
        view.draw(link, &track, started, label);
    })();
    let drained = drain(link, &mut track);
    view.finish();
    summary(
        link,
        &track,
        started.elapsed(),
        report,
        outcome.as_ref().err(),
    );
    outcome.and(drained)
}

/// Waits (≤ 1 s) for the answers still owed.
fn drain(link: &mut Link, track: &mut Track) -> Result<(), LinkError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut inbox = Vec::new();
    while link.outstanding() > 0 && Instant::now() < deadline {
        link.poll(Instant::now() + Duration::from_millis(20), &mut inbox)?;
        for inc in inbox.drain(..) {
            track.observe(&inc);
        }
    }
    Ok(())
}

fn act(link: &mut Link, track: &mut Track, action: Action) -> Result<(), LinkError> {
    match action {
        Action::Setup => {
            link.subscribe(Stream::Meters, RATE_HZ)?;
            link.subscribe(Stream::Transport, RATE_HZ)?;
            link.subscribe(Stream::Health, 4)?;
            let kind = heapless::String::try_from("osc").unwrap_or_default();
            link.add_node(AddNode { node: 10, kind })?;
            let edge = Edge {
                from: 10,
                from_port: 0,
                to: GAIN,
                to_port: 0,
            };
            link.connect(edge)?;
            link.set_param(OSC, FREQ, 220.0, 0.0)?;
            link.set_param(GAIN, LEVEL, 0.5, 0.0)?;
        }
        Action::Play => {
            track.phase = Phase::Changing;
            link.play()?;
        }
        Action::Freq(hz, ramp) => {
            link.set_param(OSC, FREQ, hz, ramp)?;
        }
        Action::Gain(g, ramp) => {
            link.set_param(GAIN, LEVEL, g, ramp)?;
        }
        Action::Seek(sample) => {
            track.seek_target = Some(sample);
            track.seek_acked = false;
            link.send(&Seek { sample })?;
        }
        Action::Stop => {
            track.phase = Phase::Changing;
            link.stop()?;
        }
    }
    Ok(())
}

fn summary(link: &Link, t: &Track, elapsed: Duration, report: Reporter, ended: Option<&LinkError>) {
    let s = &link.stats;
    let (xruns, dropped, shed) = s.health_totals();
    let mut lat = s.latencies_us.clone();
    let latency = latency_summary(&mut lat);
    let rate = (t.wall > 0.0).then(|| t.pos_delta as f64 / t.wall);
    let ratio = rate.map(|r| r / f64::from(t.sample_rate.max(1)));
    let v = json!({
        "duration_s": elapsed.as_secs_f64(),
        "ended_early": ended.map(ToString::to_string),
        "instances": s.instances,
        "restarts": s.restarts,
        "commands_sent": s.sent,
        "acks": s.acks,
        "pongs": s.pongs,
        "errors": s.errors,
        "lost": s.lost,
        "unanswered": link.outstanding(),
        "heartbeats": s.heartbeats,
        "telemetry": {"meters": s.telemetry[0], "transport": s.telemetry[1], "health": s.telemetry[2]},
        "drops": {"telemetry_dropped": dropped, "telemetry_shed": shed},
        "xruns": xruns,
        "dsp_load_max": s.dsp_load_max,
        "latency_us": latency,
        "meters": {
            "playing_frames": t.play_frames, "playing_silent_frames": t.play_silent,
            "playing_peak_min": t.play_peak_min, "playing_peak_max": t.play_peak_max,
            "stopped_frames": t.stop_frames, "stopped_nonzero_frames": t.stop_nonzero,
            "stopped_peak_max": t.stop_peak_max, "transitional_frames": t.transitional,
        },
        "transport": {
            "sample_rate": t.sample_rate, "playing_wall_s": t.wall, "position_delta": t.pos_delta,
            "rate_hz": rate, "rate_ratio": ratio,
            "seek_target": t.seek_target, "position_after_seek": t.position_after_seek,
        },
    });
    report.result("summary", v.clone(), &human_summary(&v));
}

fn human_summary(v: &Value) -> String {
    let l = &v["latency_us"];
    let us = |k: &str| fmt_us(l[k].as_u64());
    format!(
        "\nsummary ({:.1} s, {} engine instance(s), {} restart(s))\n  \
         commands {}  acks {}  errors {}  lost {}  unanswered {}  (+{} heartbeat pings)\n  \
         telemetry frames: meters {}  transport {}  health {}   dropped {}  shed {}\n  \
         command → ack latency: p50 {}  p90 {}  p99 {}  max {}  (n = {})\n  \
         meters: playing {} frames (silent {}), peak {:.3}..{:.3};  stopped {} frames (non-zero {})\n  \
         transport: position advanced {:.0} samples/s while playing = {:.3} × {} Hz over {:.2} s\n  \
         engine: xruns {}  max DSP load {:.1}%",
        v["duration_s"].as_f64().unwrap_or(0.0),
        v["instances"].as_array().map_or(0, Vec::len),
        v["restarts"],
        v["commands_sent"], v["acks"], v["errors"], v["lost"], v["unanswered"], v["heartbeats"],
        v["telemetry"]["meters"], v["telemetry"]["transport"], v["telemetry"]["health"],
        v["drops"]["telemetry_dropped"], v["drops"]["telemetry_shed"],
        us("p50"), us("p90"), us("p99"), us("max"), l["count"],
        v["meters"]["playing_frames"], v["meters"]["playing_silent_frames"],
        v["meters"]["playing_peak_min"].as_f64().unwrap_or(0.0),
        v["meters"]["playing_peak_max"].as_f64().unwrap_or(0.0),
        v["meters"]["stopped_frames"], v["meters"]["stopped_nonzero_frames"],
        v["transport"]["rate_hz"].as_f64().unwrap_or(0.0),
        v["transport"]["rate_ratio"].as_f64().unwrap_or(0.0),
        v["transport"]["sample_rate"],
        v["transport"]["playing_wall_s"].as_f64().unwrap_or(0.0),
        v["xruns"],
        v["dsp_load_max"].as_f64().unwrap_or(0.0) * 100.0,
    )
}

/// The live view: ANSI redraw on a terminal, a line every half second otherwise, nothing with
/// `--json`.
struct View {
    enabled: bool,
    tty: bool,
    lines: usize,
    last: Option<Instant>,
}

impl View {
    fn new(tty: bool, enabled: bool) -> Self {
        let tty = tty && enabled;
        if tty {
            print!("\x1b[?25l"); // hide the cursor while drawing
        }
        Self {
            enabled,
            tty,
            lines: 0,
            last: None,
        }
    }

    fn draw(&mut self, link: &Link, t: &Track, started: Instant, label: &str) {
        let every = if self.tty { 50 } else { 500 };
        if !self.enabled
            || self
                .last
                .is_some_and(|l| l.elapsed() < Duration::from_millis(every))
        {
            return;
        }
        self.last = Some(Instant::now());
        let elapsed = started.elapsed().as_secs_f64();
        let sr = f64::from(t.sample_rate.max(1));
        let (play, pos) = t.transport.map_or(("?", 0.0), |tr| {
            (
                if tr.playing {
                    "▶ playing"
                } else {
                    "■ stopped"
                },
                tr.position as f64 / sr,
            )
        });
        let s = &link.stats;
        let status = format!(
            "{elapsed:5.1}s  {play}  position {:>2}:{:06.3}  │ commands {} acks {} errors {}",
            (pos / 60.0) as u64,
            pos % 60.0,
            s.sent,
            s.acks,
            s.errors
        );
        if !self.tty {
            let peak = t.meters.0.first().copied().unwrap_or(0.0);
            println!("{status}  │ peak {}  │ {label}", db(peak));
            return;
        }
        let mut out = String::new();
        if self.lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.lines));
        }
        let mut lines = vec![status];
        for (ch, (p, r)) in t.meters.0.iter().zip(&t.meters.1).take(8).enumerate() {
            lines.push(format!(
                "  ch{ch} {} peak {:>9}  rms {:>9}",
                bar(*p, *r),
                db(*p),
                db(*r)
            ));
        }
        let h = t.health.unwrap_or_default();
        lines.push(format!(
            "  engine: callbacks {}  xruns {}  dsp {:.1}%  │ {label}",
            h.callbacks,
            h.xruns,
            h.dsp_load * 100.0
        ));
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        self.lines = lines.len();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    fn finish(&mut self) {
        if self.tty {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

fn db(x: f32) -> String {
    if x <= 0.0 {
        "-inf dBFS".into()
    } else {
        format!("{:.1} dBFS", 20.0 * x.log10())
    }
}

/// A 40-column bar from -60 dBFS to 0: `█` up to the RMS, `▒` up to the peak.
fn bar(peak: f32, rms: f32) -> String {
    let cols = |x: f32| {
        if x <= 0.0 {
            0
        } else {
            (((20.0 * x.log10() + 60.0) / 60.0).clamp(0.0, 1.0) * 40.0).round() as usize
        }
    };
    let (r, p) = (cols(rms), cols(peak).max(cols(rms)));
    format!(
        "{}{}{}",
        "█".repeat(r),
        "▒".repeat(p - r),
        "·".repeat(40 - p)
    )
}

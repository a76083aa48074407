//! `aura send`, `aura watch` and `aura ping`.

use std::time::{Duration, Instant};

use loophole_ipc::message::{
    AnalysisMeta, AnalysisStream, Ping, Play, ServerMessage, Stream, SubscribeAnalysis,
};
use serde_json::{json, Value};

use crate::link::{Incoming, Link, LinkError};
use crate::report::{fmt_us, latency_summary, Reporter};

/// `send NAME JSON`: sends one command as given and prints its answer. `Ok(false)` when the
/// engine answered with an error.
pub fn send(link: &mut Link, name: &str, body: &str, report: Reporter) -> Result<bool, LinkError> {
    let id = link.send_raw(name, body)?;
    let mut other = Vec::new();
    match link.wait_answer(id, Duration::from_secs(5), &mut other)? {
        Some(Incoming::Answer {
            result,
            latency,
            pong,
            ..
        }) => {
            let us = latency.as_micros() as u64;
            let ok = result.is_ok();
            let reply = if pong { "pong" } else { "ack" };
            let (fields, text) = match result {
                Ok(sample) => (
                    json!({"id": id, "name": name, "ok": true, "reply": reply, "sample": sample,
                           "latency_us": us}),
                    format!(
                        "{name} (id {id}): {reply}{} in {}",
                        sample.map_or(String::new(), |s| format!(" at sample {s}")),
                        fmt_us(Some(us))
                    ),
                ),
                Err((code, message)) => (
                    json!({"id": id, "name": name, "ok": false, "code": code, "message": message, "latency_us": us}),
                    format!("{name} (id {id}): error {code}: {message}"),
                ),
            };
            report.result("answer", fields, &text);
            Ok(ok)
        }
        _ => {
            report.fatal(&format!("no answer to {name} (id {id}) within 5 s"));
            Ok(false)
        }
    }
}

/// When `watch` stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchLimits {
    /// Stop after this many telemetry frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub seconds: Option<f64>,
    /// Start the transport first (so there is something to see).
    pub play: bool,
    /// Frames per second per stream, [`MIN_RATE_HZ`]`..=`[`MAX_RATE_HZ`] (checked by the
    /// command line).
    pub rate_hz: u16,
    /// The analysis tap shown (scope and spectrum): `None` for the default, tap 0 when the
    /// engine has taps. A tap given explicitly that the engine lacks ends `watch` with `Ok(false)`.
    pub tap: Option<u16>,
}

/// Lowest `--rate`.
pub const MIN_RATE_HZ: u16 = 1;
/// Highest `--rate`.
pub const MAX_RATE_HZ: u16 = 120;

/// Bins of the spectrum `watch` asks for (23.4 Hz per bin at 48 kHz).
const WATCH_BINS: u16 = 1024;
/// Points of the scope `watch` asks for.
const WATCH_POINTS: u16 = 64;
/// Columns of the one-line spectrum.
pub const SPECTRUM_COLS: usize = 64;
/// Lowest frequency of the spectrum line, Hz (the highest is Nyquist).
const LOWEST_HZ: f64 = 20.0;
/// Characters from quiet to loud.
const SHADES: &[u8] = b" .:-=+*#%@";
/// dB range of the shades: -RANGE_DB (blank) .. 0 dBFS ('@').
const RANGE_DB: f32 = 96.0;

/// One line of `cols` characters: the spectrum on a log-frequency axis from 20 Hz (or the
/// first bin) to Nyquist, each column the loudest bin in its band, shaded from -96 to 0 dBFS.
pub fn spectrum_line(hz_per_bin: f64, db: &[f32], cols: usize) -> String {
    if db.is_empty() || hz_per_bin <= 0.0 {
        return " ".repeat(cols);
    }
    let top = hz_per_bin * db.len() as f64;
    let low = LOWEST_HZ.max(hz_per_bin).min(top / 2.0);
    let ratio = top / low;
    let bin = |hz: f64| ((hz / hz_per_bin).round() as usize).min(db.len() - 1);
    (0..cols)
        .map(|c| {
            let f0 = low * ratio.powf(c as f64 / cols as f64);
            let f1 = low * ratio.powf((c + 1) as f64 / cols as f64);
            let (k0, k1) = (bin(f0), bin(f1).max(bin(f0)));
            let level = db[k0..=k1].iter().copied().fold(f32::MIN, f32::max);
            let x = ((level + RANGE_DB) / RANGE_DB).clamp(0.0, 1.0);
            SHADES[(x * (SHADES.len() - 1) as f32).round() as usize] as char
        })
        .collect()
}

/// The loudest bin: (centre frequency, dBFS).
fn spectrum_peak(hz_per_bin: f64, db: &[f32]) -> (f64, f32) {
    db.iter()
        .copied()
        .enumerate()
        .skip(1) // DC
        .fold((0.0, f32::MIN), |a, (k, v)| {
            if v > a.1 {
                (k as f64 * hz_per_bin, v)
            } else {
                a
            }
        })
}

fn fmt_hz(hz: f64) -> String {
    if hz >= 1000.0 {
        format!("{:.1} kHz", hz / 1000.0)
    } else {
        format!("{hz:.0} Hz")
    }
}

/// Text and JSON of a `scope`/`spectrum` frame.
fn describe_analysis(m: &AnalysisMeta, values: &[f32]) -> (Value, String) {
    let form = if m.attachment {
        "f32 attachment"
    } else {
        "JSON"
    };
    match m.stream {
        AnalysisStream::Spectrum => {
            let hz = f64::from(m.hz_per_bin());
            let (peak_hz, peak_db) = spectrum_peak(hz, values);
            let low = LOWEST_HZ.max(hz);
            let top = hz * values.len() as f64;
            (
                json!({"name": "spectrum", "tap": m.tap, "bins": m.size, "hz_per_bin": m.hz_per_bin(),
                       "sample": m.sample, "missed": m.missed, "peak_hz": peak_hz, "peak_db": peak_db,
                       "attachment": m.attachment}),
                format!(
                    "spectrum   tap {} |{}| {}..{}  peak {} {:.1} dB  ({} bins, {form})",
                    m.tap,
                    spectrum_line(hz, values, SPECTRUM_COLS),
                    fmt_hz(low),
                    fmt_hz(top),
                    fmt_hz(peak_hz),
                    peak_db,
                    m.size
                ),
            )
        }
        AnalysisStream::Scope => {
            let n = usize::from(m.size).min(values.len() / 2);
            let (min, max) = values.split_at(n);
            let lo = min.iter().copied().fold(f32::MAX, f32::min);
            let hi = max.iter().copied().fold(f32::MIN, f32::max);
            (
                json!({"name": "scope", "tap": m.tap, "points": m.size, "samples_per_point": m.samples_per_point,
                       "sample": m.sample, "missed": m.missed, "min": lo, "max": hi, "attachment": m.attachment}),
                format!(
                    "scope      tap {}  min {lo:+.3}  max {hi:+.3}  ({} points x {} samples, missed {}, {form})",
                    m.tap, m.size, m.samples_per_point, m.missed
                ),
            )
        }
    }
}

/// `watch`: subscribes to every stream and prints telemetry as it arrives. `Ok(false)` (and
/// nothing subscribed) when `--tap` names a tap the engine does not have: only the engine's
/// `welcome` tells.
pub fn watch(link: &mut Link, limits: WatchLimits, report: Reporter) -> Result<bool, LinkError> {
    let rate = limits.rate_hz;
    let taps = link.welcome().taps;
    let tap = match limits.tap {
        Some(t) if t >= taps => {
            let has = match taps {
                0 => "the engine has no analysis taps (welcome.taps = 0)".to_owned(),
                n => format!("the engine has taps 0..={} (welcome.taps = {n})", n - 1),
            };
            report.fatal(&format!("--tap {t}: {has}"));
            return Ok(false);
        }
        Some(t) => Some(t),
        None => (taps > 0).then_some(0),
    };
    for stream in Stream::ALL {
        link.subscribe(stream, rate)?;
    }
    if let Some(tap) = tap {
        for (stream, size) in [
            (AnalysisStream::Spectrum, WATCH_BINS),
            (AnalysisStream::Scope, WATCH_POINTS),
        ] {
            link.subscribe_analysis(SubscribeAnalysis {
                stream,
                tap,
                size,
                rate_hz: rate.min(60),
            })?;
        }
    }
    if limits.play {
        link.send(&Play {})?;
    }
    let started = Instant::now();
    let end = limits
        .seconds
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let sr = f64::from(link.welcome().sample_rate.max(1));
    let mut frames = 0u64;
    let mut inbox = Vec::new();
    loop {
        if limits.count.is_some_and(|c| frames >= c) || end.is_some_and(|e| Instant::now() >= e) {
            return Ok(true);
        }
        let until = (Instant::now() + Duration::from_millis(100))
            .min(end.unwrap_or(Instant::now() + Duration::from_secs(1)));
        link.poll(until, &mut inbox)?;
        for inc in inbox.drain(..) {
            let ((fields, text), at) = match inc {
                Incoming::Telemetry(msg, at) => (describe(&msg, sr), at),
                Incoming::Analysis(m, values, at) => (describe_analysis(&m, &values), at),
                _ => continue,
            };
            if limits.count.is_some_and(|c| frames >= c) {
                break;
            }
            frames += 1;
            let t = at.duration_since(started).as_secs_f64();
            report.result(
                "telemetry",
                json!({"t": t, "telemetry": fields}),
                &format!("{t:8.3}s  {text}"),
            );
        }
    }
}

fn describe(msg: &ServerMessage, sr: f64) -> (Value, String) {
    match msg {
        ServerMessage::Meters(m) => {
            let chans: Vec<String> = m.peak.iter().zip(&m.rms).map(|(p, r)| format!("{p:.3}/{r:.3}")).collect();
            (
                json!({"name": "meters", "peak": m.peak.to_vec(), "rms": m.rms.to_vec()}),
                format!("meters     peak/rms per channel: {}", chans.join("  ")),
            )
        }
        ServerMessage::Transport(t) => (
            json!({"name": "transport.state", "playing": t.playing, "position": t.position, "bpm": t.bpm,
                   "loop_start": t.loop_start, "loop_end": t.loop_end, "loop_enabled": t.loop_enabled}),
            format!(
                "transport  {} position {} ({:.3} s)  {} bpm{}",
                if t.playing { "playing" } else { "stopped" },
                t.position,
                t.position as f64 / sr,
                t.bpm,
                if t.loop_enabled { format!("  loop {}..{}", t.loop_start, t.loop_end) } else { String::new() }
            ),
        ),
        ServerMessage::Health(h) => (
            json!({"name": "engine.health", "callbacks": h.callbacks, "xruns": h.xruns, "dsp_load": h.dsp_load,
                   "cmd_queue_len": h.cmd_queue_len, "cmd_queue_capacity": h.cmd_queue_capacity,
                   "cmd_queue_high": h.cmd_queue_high, "reply_queue_high": h.reply_queue_high,
                   "telemetry_dropped": h.telemetry_dropped, "telemetry_shed": h.telemetry_shed}),
            format!(
                "health     callbacks {}  xruns {}  dsp load {:.1}%  queue {}/{} (high {})  dropped {}  shed {}",
                h.callbacks, h.xruns, h.dsp_load * 100.0, h.cmd_queue_len, h.cmd_queue_capacity,
                h.cmd_queue_high, h.telemetry_dropped, h.telemetry_shed
            ),
        ),
        other => (json!({"name": "other"}), format!("{other:?}")),
    }
}

/// `ping --count N [--rt]`: sequential pings, then round-trip percentiles.
pub fn ping(link: &mut Link, count: u32, rt: bool, report: Reporter) -> Result<(), LinkError> {
    let mut samples = Vec::with_capacity(count as usize);
    let mut lost = 0u32;
    let mut other = Vec::new();
    for nonce in 0..count {
        let body = Ping {
            nonce,
            t_client_us: None,
            rt,
        };
        match link.request(&body, Duration::from_secs(5), &mut other)? {
            Some(Incoming::Answer {
                result: Ok(_),
                latency,
                ..
            }) => samples.push(latency.as_micros() as u64),
            _ => lost += 1,
        }
        other.clear();
    }
    let lat = latency_summary(&mut samples);
    let route = if rt {
        "through the audio thread (rt)"
    } else {
        "network thread"
    };
    let text = format!(
        "ping {route}: {} answered, {lost} lost; round trip p50 {}  p99 {}  p99.9 {}  max {}",
        lat["count"],
        fmt_us(lat["p50"].as_u64()),
        fmt_us(lat["p99"].as_u64()),
        fmt_us(lat["p99_9"].as_u64()),
        fmt_us(lat["max"].as_u64()),
    );
    report.result(
        "ping",
        json!({"rt": rt, "sent": count, "lost": lost, "round_trip_us": lat}),
        &text,
    );
    Ok(())
}

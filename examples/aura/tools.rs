//! `aura send`, `aura watch` and `aura ping`.

use std::time::{Duration, Instant};

use loophole_ipc::message::{Ping, Play, ServerMessage, Stream};
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
            result, latency, ..
        }) => {
            let us = latency.as_micros() as u64;
            let ok = result.is_ok();
            let (fields, text) = match result {
                Ok(sample) => (
                    json!({"id": id, "name": name, "ok": true, "sample": sample, "latency_us": us}),
                    format!(
                        "{name} (id {id}): ack{} in {}",
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
    /// Frames per second per stream.
    pub rate_hz: u16,
}

/// `watch`: subscribes to every stream and prints telemetry as it arrives.
pub fn watch(link: &mut Link, limits: WatchLimits, report: Reporter) -> Result<(), LinkError> {
    let rate = limits.rate_hz.clamp(1, 120);
    for stream in Stream::ALL {
        link.subscribe(stream, rate)?;
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
            return Ok(());
        }
        let until = (Instant::now() + Duration::from_millis(100))
            .min(end.unwrap_or(Instant::now() + Duration::from_secs(1)));
        link.poll(until, &mut inbox)?;
        for inc in inbox.drain(..) {
            let Incoming::Telemetry(msg, at) = inc else {
                continue;
            };
            if limits.count.is_some_and(|c| frames >= c) {
                break;
            }
            frames += 1;
            let t = at.duration_since(started).as_secs_f64();
            let (fields, text) = describe(&msg, sr);
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

//! How aura talks to people and to programs: events as one JSON object per line on stdout with
//! `--json`, readable lines on stderr otherwise.

use serde_json::{json, Value};

/// Where events go.
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    /// One JSON object per line on stdout.
    pub json: bool,
}

impl Reporter {
    /// Reports an event: with `--json`, `{"event":name, ...fields}` on stdout; otherwise the
    /// human text on stderr (skipped when `human` is `None`).
    pub fn event(&self, name: &str, fields: Value, human: Option<String>) {
        if self.json {
            let mut obj = json!({ "event": name });
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            println!("{obj}");
        } else if let Some(text) = human {
            eprintln!("aura: {text}");
        }
    }

    /// A result: the JSON object on stdout with `--json`, else the text on stdout.
    pub fn result(&self, name: &str, fields: Value, human: &str) {
        if self.json {
            self.event(name, fields, None);
        } else {
            println!("{human}");
        }
    }

    /// An error for a person (always stderr) and, with `--json`, an `error` event.
    pub fn fatal(&self, what: &str) {
        if self.json {
            self.event("fatal", json!({ "message": what }), None);
        }
        eprintln!("aura: error: {what}");
    }
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100). `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `{count, p50, p90, p99, p99_9, max}` of microsecond samples (sorted in place).
pub fn latency_summary(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    let p = |q| percentile(samples, q);
    json!({
        "count": samples.len(),
        "p50": p(50.0), "p90": p(90.0), "p99": p(99.0), "p99_9": p(99.9),
        "max": samples.last(),
    })
}

/// Microseconds as a short human string.
pub fn fmt_us(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(u) if u < 1_000 => format!("{u} µs"),
        Some(u) => format!("{:.2} ms", u as f64 / 1000.0),
    }
}

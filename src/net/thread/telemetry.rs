//! Telemetry: the frames due on a session and the `engine.health` body.

use super::conn::Conn;
use super::hub::Hub;
use super::Worker;
use crate::message::{Health, Meters, Stream};
use crate::net::analysis;
use crate::rt::HealthSnapshot;

fn sat32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Hub {
    /// An `engine.health` body: the audio side's counters, the DSP-load maximum over the
    /// callbacks since the previous health frame (the last known one if no callback completed
    /// since), and this session's shed count.
    pub(super) fn health(&mut self, shed: u64) -> Health {
        if let Some(load) = self.net.take_dsp_load_max() {
            self.dsp_load_max = load;
        }
        health_msg(&self.net.health(), self.dsp_load_max, shed)
    }
}

fn health_msg(h: &HealthSnapshot, dsp_load: f32, shed: u64) -> Health {
    Health {
        callbacks: h.callbacks,
        xruns: h.xruns,
        dsp_load,
        cmd_queue_len: sat32(h.cmd_queue_len),
        cmd_queue_capacity: sat32(h.cmd_queue_capacity),
        cmd_queue_high: sat32(h.cmd_queue_high),
        reply_queue_high: sat32(h.reply_queue_high),
        telemetry_dropped: h.telemetry_dropped,
        telemetry_shed: shed,
    }
}

impl Worker {
    /// Makes the analysis worker's request table the union of the sessions' analysis
    /// subscriptions (see `net/analysis.rs`). No store when nothing changed.
    pub(super) fn reconcile_analysis(&mut self) {
        let Some(a) = self.hub.analysis.as_mut() else {
            return;
        };
        let mut wanted = analysis::Wanted::default();
        for c in self.slots.iter().flatten() {
            analysis::want(&c.session, &mut wanted);
        }
        a.reconcile(&wanted);
    }
}

/// Sends the telemetry frames due on this session (built on the stack: no allocation), the
/// analysis frames (`scope`, `spectrum`) included.
pub(super) fn send_telemetry(c: &mut Conn, hub: &mut Hub, now: u64) {
    let due = c.session.telemetry_due(now);
    for stream in due.iter() {
        match stream {
            Stream::Meters => {
                let n = hub.net.take_meters(&mut hub.peak, &mut hub.rms);
                if n > 0 {
                    hub.meter_n = n;
                }
                let n = hub.meter_n;
                let body = Meters {
                    peak: heapless::Vec::from_slice(&hub.peak[..n]).unwrap_or_default(),
                    rms: heapless::Vec::from_slice(&hub.rms[..n]).unwrap_or_default(),
                };
                c.session.send_telemetry(stream, &body, now);
            }
            Stream::Transport => {
                c.session.send_telemetry(stream, &hub.transport, now);
            }
            Stream::Health => {
                let h = hub.health(c.session.telemetry_shed());
                c.session.send_telemetry(stream, &h, now);
            }
        }
    }
    // After the other streams: under a tight buffer those go first (analysis also keeps a
    // larger reserve, session.md §5).
    if let Some(a) = hub.analysis.as_mut() {
        analysis::send_due(&mut c.session, c.key, a, now);
    }
}

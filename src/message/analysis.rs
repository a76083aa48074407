//! The analysis streams `scope` and `spectrum` (envelope.md "Analysis streams"): their
//! subscriptions, the bodies the engine writes (JSON arrays or a binary attachment), and a
//! borrowed, no-heap reader for what a client receives.
//!
//! Nothing here allocates. Encoding serializes borrowed slices; decoding borrows the frame and
//! copies values only into a buffer the caller gives ([`AnalysisValues::copy_to`]).

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::catalogue::present;
use super::{scan, Kind, Message, MAX_SAFE_INTEGER};
use crate::error::{DecodeError, FieldProblem};

/// Most analysis subscriptions (keys (`stream`, `tap`)) one session holds.
pub const MAX_ANALYSIS_SUBS: usize = 8;
/// Fewest and most `scope` points.
pub const SCOPE_POINTS: core::ops::RangeInclusive<u16> = 16..=1024;
/// Fewest and most `spectrum` bins (a power of two).
pub const SPECTRUM_BINS: core::ops::RangeInclusive<u16> = 16..=4096;
/// Highest `rate_hz` of an analysis subscription.
pub const MAX_ANALYSIS_RATE_HZ: u16 = 60;
/// Most values one analysis frame carries (a 1024-point scope: min and max; a 4096-bin
/// spectrum).
pub const MAX_ANALYSIS_VALUES: usize = 4096;
/// The dB floor of `spectrum`: no value is below it.
pub const SPECTRUM_FLOOR_DB: f32 = -160.0;
/// What a non-finite value is sent as (JSON has no NaN): the largest `f32`, as in `meters`.
pub const NON_FINITE: f32 = f32::MAX;

/// An analysis stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisStream {
    /// `scope`: min/max per point of the latest window.
    Scope,
    /// `spectrum`: dBFS per linear bin of a Hann-windowed FFT.
    Spectrum,
}

impl AnalysisStream {
    /// The wire name (stream and telemetry message).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Scope => "scope",
            Self::Spectrum => "spectrum",
        }
    }

    /// Values one frame carries for `size` points (scope: min then max) or bins.
    pub const fn values_for(self, size: u16) -> usize {
        match self {
            Self::Scope => 2 * size as usize,
            Self::Spectrum => size as usize,
        }
    }

    /// The body field that holds `size` (`points` or `bins`).
    pub const fn size_field(self) -> &'static str {
        match self {
            Self::Scope => "points",
            Self::Spectrum => "bins",
        }
    }

    /// Whether `size` is a valid `points` (scope) or `bins` (spectrum).
    pub const fn size_ok(self, size: u16) -> bool {
        match self {
            Self::Scope => size >= *SCOPE_POINTS.start() && size <= *SCOPE_POINTS.end(),
            Self::Spectrum => {
                size >= *SPECTRUM_BINS.start()
                    && size <= *SPECTRUM_BINS.end()
                    && size.is_power_of_two()
            }
        }
    }
}

/// What one analysis value is computed for: a stream, a tap and a size. The network thread
/// serves every session that asks for the same key from one computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnalysisKey {
    /// `scope` or `spectrum`.
    pub stream: AnalysisStream,
    /// The tap, below `welcome.taps`.
    pub tap: u16,
    /// `points` (scope) or `bins` (spectrum).
    pub size: u16,
}

impl AnalysisKey {
    /// Values one frame of this key holds: 2 × points (min then max) or bins.
    pub const fn value_count(&self) -> usize {
        self.stream.values_for(self.size)
    }
}

/// Every `stream` value of `telemetry.subscribe`/`unsubscribe`, for decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum AnyStream {
    #[serde(rename = "meters")]
    Meters,
    #[serde(rename = "transport.state")]
    Transport,
    #[serde(rename = "engine.health")]
    Health,
    #[serde(rename = "scope")]
    Scope,
    #[serde(rename = "spectrum")]
    Spectrum,
}

impl AnyStream {
    pub(crate) fn split(self) -> Result<super::Stream, AnalysisStream> {
        match self {
            Self::Meters => Ok(super::Stream::Meters),
            Self::Transport => Ok(super::Stream::Transport),
            Self::Health => Ok(super::Stream::Health),
            Self::Scope => Err(AnalysisStream::Scope),
            Self::Spectrum => Err(AnalysisStream::Spectrum),
        }
    }
}

/// The body of `telemetry.subscribe` as the wire has it (every stream), before the per-stream
/// presence rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeWire {
    pub(crate) stream: AnyStream,
    pub(crate) rate_hz: u16,
    #[serde(default, deserialize_with = "present")]
    pub(crate) tap: Option<u16>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) points: Option<u16>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) bins: Option<u16>,
}

/// The body of `telemetry.unsubscribe` as the wire has it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnsubscribeWire {
    pub(crate) stream: AnyStream,
    #[serde(default, deserialize_with = "present")]
    pub(crate) tap: Option<u16>,
}

const MISPLACED: DecodeError = DecodeError::InvalidField {
    problem: FieldProblem::MissingOrUnknown,
};

impl SubscribeWire {
    /// Applies envelope.md's presence rules: `tap`/`points`/`bins` unknown for the three old
    /// streams; `tap` and `points` (scope) or `bins` (spectrum) required, the other unknown.
    pub(crate) fn into_command(self) -> Result<super::Command, DecodeError> {
        match self.stream.split() {
            Ok(stream) if self.tap.is_none() && self.points.is_none() && self.bins.is_none() => {
                Ok(super::Command::Subscribe(super::Subscribe {
                    stream,
                    rate_hz: self.rate_hz,
                }))
            }
            Ok(_) => Err(MISPLACED),
            Err(stream) => {
                let size = match stream {
                    AnalysisStream::Scope if self.bins.is_none() => self.points,
                    AnalysisStream::Spectrum if self.points.is_none() => self.bins,
                    _ => None,
                };
                match (self.tap, size) {
                    (Some(tap), Some(size)) => {
                        Ok(super::Command::SubscribeAnalysis(SubscribeAnalysis {
                            stream,
                            tap,
                            size,
                            rate_hz: self.rate_hz,
                        }))
                    }
                    _ => Err(MISPLACED),
                }
            }
        }
    }
}

impl UnsubscribeWire {
    /// `tap` only with `scope`/`spectrum`.
    pub(crate) fn into_command(self) -> Result<super::Command, DecodeError> {
        match (self.stream.split(), self.tap) {
            (Ok(stream), None) => Ok(super::Command::Unsubscribe(super::Unsubscribe { stream })),
            (Ok(_), Some(_)) => Err(MISPLACED),
            (Err(stream), tap) => Ok(super::Command::UnsubscribeAnalysis(UnsubscribeAnalysis {
                stream,
                tap,
            })),
        }
    }
}

/// `command telemetry.subscribe` of `scope` or `spectrum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeAnalysis {
    /// Which stream.
    pub stream: AnalysisStream,
    /// Which tap, 0 ..`welcome.taps`.
    pub tap: u16,
    /// `points` (scope, 16 ..= 1024) or `bins` (spectrum, a power of two 16 ..= 4096).
    pub size: u16,
    /// Frames per second, 1 to 60.
    pub rate_hz: u16,
}

impl Message for SubscribeAnalysis {
    const KIND: Kind = Kind::Command;
    const NAME: &'static str = "telemetry.subscribe";
}

impl Serialize for SubscribeAnalysis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SubscribeAnalysis", 4)?;
        st.serialize_field("stream", &self.stream)?;
        st.serialize_field("rate_hz", &self.rate_hz)?;
        st.serialize_field("tap", &self.tap)?;
        match self.stream {
            AnalysisStream::Scope => st.serialize_field("points", &self.size)?,
            AnalysisStream::Spectrum => st.serialize_field("bins", &self.size)?,
        }
        st.end()
    }
}

/// `command telemetry.unsubscribe` of `scope` or `spectrum`: one tap, or every tap (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UnsubscribeAnalysis {
    /// Which stream.
    pub stream: AnalysisStream,
    /// Which tap; `None` = every tap of the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tap: Option<u16>,
}

impl Message for UnsubscribeAnalysis {
    const KIND: Kind = Kind::Command;
    const NAME: &'static str = "telemetry.unsubscribe";
}

/// Values written as a JSON array, non-finite ones as [`NON_FINITE`].
struct Finite<'a>(&'a [f32]);

impl Serialize for Finite<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&finite(*v))?;
        }
        seq.end()
    }
}

/// `v`, or [`NON_FINITE`] for NaN and the infinities.
pub const fn finite(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        NON_FINITE
    }
}

/// `telemetry scope` as the engine writes it. With `values` the body carries `min` and `max`
/// (JSON form); without, they travel as the frame's attachment (`min[0..n]` then `max[0..n]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scope<'a> {
    /// Tap.
    pub tap: u16,
    /// Points (n).
    pub points: u16,
    /// Samples each point covers.
    pub samples_per_point: u32,
    /// Engine sample clock of the window's last sample.
    pub sample: u64,
    /// Samples the reader lost since the previous frame.
    pub missed: u64,
    /// `Some(2n values)`: min then max, written as JSON arrays. `None`: attachment form.
    pub values: Option<&'a [f32]>,
}

impl Message for Scope<'_> {
    const KIND: Kind = Kind::Telemetry;
    const NAME: &'static str = "scope";
}

impl Serialize for Scope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Scope", 7)?;
        st.serialize_field("tap", &self.tap)?;
        st.serialize_field("points", &self.points)?;
        st.serialize_field("samples_per_point", &self.samples_per_point)?;
        st.serialize_field("sample", &self.sample.min(MAX_SAFE_INTEGER))?;
        st.serialize_field("missed", &self.missed.min(MAX_SAFE_INTEGER))?;
        if let Some(v) = self.values {
            let (min, max) = v.split_at(v.len() / 2);
            st.serialize_field("min", &Finite(min))?;
            st.serialize_field("max", &Finite(max))?;
        }
        st.end()
    }
}

/// `telemetry spectrum` as the engine writes it. With `values` the body carries `db` (JSON
/// form); without, the values travel as the frame's attachment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spectrum<'a> {
    /// Tap.
    pub tap: u16,
    /// Bins (n).
    pub bins: u16,
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Engine sample clock of the window's last sample.
    pub sample: u64,
    /// Samples the reader lost since the previous frame.
    pub missed: u64,
    /// `Some(n values)`: dBFS per bin, written as a JSON array. `None`: attachment form.
    pub values: Option<&'a [f32]>,
}

impl Spectrum<'_> {
    /// `sample_rate / (2 * bins)`: the bin width, not sent (envelope.md: the client computes it).
    pub fn hz_per_bin(&self) -> f32 {
        hz_per_bin(self.sample_rate, self.bins)
    }
}

/// `sample_rate / (2 * bins)` in Hz: bin k of a spectrum is centred at k times this. Not on the
/// wire (envelope.md "Analysis streams": a client computes it from `sample_rate` and `bins`).
pub fn hz_per_bin(sample_rate: u32, bins: u16) -> f32 {
    (f64::from(sample_rate) / (2.0 * f64::from(bins.max(1)))) as f32
}

impl Message for Spectrum<'_> {
    const KIND: Kind = Kind::Telemetry;
    const NAME: &'static str = "spectrum";
}

impl Serialize for Spectrum<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The window (always Hann) and the bin width (sample_rate / (2 bins)) are not sent.
        let mut st = s.serialize_struct("Spectrum", 6)?;
        st.serialize_field("tap", &self.tap)?;
        st.serialize_field("bins", &self.bins)?;
        st.serialize_field("sample_rate", &self.sample_rate)?;
        st.serialize_field("sample", &self.sample.min(MAX_SAFE_INTEGER))?;
        st.serialize_field("missed", &self.missed.min(MAX_SAFE_INTEGER))?;
        if let Some(v) = self.values {
            st.serialize_field("db", &Finite(v))?;
        }
        st.end()
    }
}

/// The scalar fields of a received `scope` or `spectrum` frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisMeta {
    /// Which stream.
    pub stream: AnalysisStream,
    /// Tap.
    pub tap: u16,
    /// `points` (scope) or `bins` (spectrum).
    pub size: u16,
    /// Scope: samples per point (0 for a spectrum).
    pub samples_per_point: u32,
    /// Spectrum: sample rate in Hz (0 for a scope).
    pub sample_rate: u32,
    /// Engine sample clock of the window's last sample.
    pub sample: u64,
    /// Samples the engine's reader lost since the previous frame.
    pub missed: u64,
    /// True when the values came as an attachment.
    pub attachment: bool,
}

impl AnalysisMeta {
    /// How many values the frame carries (scope: 2 × points; spectrum: bins).
    pub const fn value_count(&self) -> usize {
        self.stream.values_for(self.size)
    }

    /// Spectrum: the bin width in Hz, `sample_rate / (2 * bins)`, computed here (the wire does
    /// not carry it); 0 for a scope. Allocates nothing.
    pub fn hz_per_bin(&self) -> f32 {
        match self.stream {
            AnalysisStream::Spectrum => hz_per_bin(self.sample_rate, self.size),
            AnalysisStream::Scope => 0.0,
        }
    }
}

/// The values of a received analysis frame, borrowed from it: raw JSON arrays or the
/// attachment's little-endian bytes. Both forms give the same `f32`s through
/// [`copy_to`](Self::copy_to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisValues<'a> {
    /// JSON form: the raw text of `min` then `max` (scope), or of `db` and `None` (spectrum).
    Json(&'a [u8], Option<&'a [u8]>),
    /// Attachment form: `4 × count` bytes of `f32` little-endian.
    F32Le(&'a [u8]),
}

impl AnalysisMeta {
    /// Copies the frame's values into `out` (scope: min then max) and returns them, checking
    /// that there are exactly [`value_count`](Self::value_count) of them (for a scope: `min`
    /// and `max` of `points` each). `InvalidField` otherwise; `BufferTooSmall` when `out` is
    /// shorter than that.
    pub fn read_values<'o>(
        &self,
        values: &AnalysisValues<'_>,
        out: &'o mut [f32],
    ) -> Result<&'o [f32], DecodeError> {
        let want = self.value_count();
        let out = out.get_mut(..want).ok_or(DecodeError::BufferTooSmall)?;
        let n = match *values {
            AnalysisValues::Json(a, Some(b)) => {
                let half = usize::from(self.size);
                let (lo, hi) = out.split_at_mut(half);
                let ok =
                    json_floats(a, lo).ok() == Some(half) && json_floats(b, hi).ok() == Some(half);
                if ok {
                    want
                } else {
                    return Err(MISPLACED);
                }
            }
            v => v.copy_to(out).map_err(|_| MISPLACED)?,
        };
        if n != want {
            return Err(MISPLACED);
        }
        Ok(out)
    }
}

impl AnalysisValues<'_> {
    /// Writes every value into `out` in wire order (scope: min then max); returns how many.
    /// Fails with [`DecodeError::BufferTooSmall`] when `out` is short, and
    /// [`DecodeError::InvalidField`] when a JSON array holds something other than numbers.
    pub fn copy_to(&self, out: &mut [f32]) -> Result<usize, DecodeError> {
        match *self {
            Self::F32Le(bytes) => {
                let n = bytes.len() / 4;
                let dst = out.get_mut(..n).ok_or(DecodeError::BufferTooSmall)?;
                for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                    *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                Ok(n)
            }
            Self::Json(a, b) => {
                let n = json_floats(a, out)?;
                match b {
                    Some(b) => {
                        let rest = out.get_mut(n..).ok_or(DecodeError::BufferTooSmall)?;
                        Ok(n + json_floats(b, rest)?)
                    }
                    None => Ok(n),
                }
            }
        }
    }
}

const WRONG: DecodeError = DecodeError::InvalidField {
    problem: FieldProblem::WrongType,
};

/// Parses a JSON array of numbers (already syntax-checked) into `out`; returns the count.
fn json_floats(arr: &[u8], out: &mut [f32]) -> Result<usize, DecodeError> {
    let inner = arr
        .strip_prefix(b"[")
        .and_then(|a| a.strip_suffix(b"]"))
        .ok_or(WRONG)?;
    let mut n = 0;
    for item in inner.split(|&b| b == b',') {
        let t = trim(item);
        if t.is_empty() && n == 0 && inner.iter().all(|b| b" \t\r\n".contains(b)) {
            break; // `[]`
        }
        let v = core::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<f32>().ok())
            .filter(|_| matches!(t.first(), Some(b'-' | b'0'..=b'9')))
            .ok_or(WRONG)?;
        *out.get_mut(n).ok_or(DecodeError::BufferTooSmall)? = v;
        n += 1;
    }
    Ok(n)
}

fn trim(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| b" \t\r\n".contains(b);
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// An integer JSON value (no sign, fraction or exponent) of at most 16 digits (2^53 − 1 has 16).
fn int(v: &[u8]) -> Option<u64> {
    super::parse_uint(v, 16)
}

/// Reads a `scope`/`spectrum` body (the engine's, so unknown fields are ignored). With
/// `attachment`, the arrays must be absent and the attachment hold exactly the values; without,
/// the arrays must be present, each of its stated length (checked when copied).
pub fn decode_analysis<'a>(
    stream: AnalysisStream,
    body: &'a [u8],
    attachment: Option<&'a [u8]>,
) -> Result<(AnalysisMeta, AnalysisValues<'a>), DecodeError> {
    let mut m = AnalysisMeta {
        stream,
        tap: 0,
        size: 0,
        samples_per_point: 0,
        sample_rate: 0,
        sample: 0,
        missed: 0,
        attachment: attachment.is_some(),
    };
    // The canonical fast path does not check UTF-8 (the serde body decoders of the other
    // messages do); this reader skips what it does not need, so it checks here.
    if let Err(e) = core::str::from_utf8(body) {
        let offset = u32::try_from(e.valid_up_to()).unwrap_or(u32::MAX);
        return Err(DecodeError::InvalidUtf8 { offset });
    }
    let (mut first, mut second) = (None, None);
    let mut seen = 0u8;
    let size_key = stream.size_field().as_bytes();
    scan::walk_object(body, None, |mem| {
        let v = &body[mem.start..mem.end];
        let small = |v: &[u8]| int(v).and_then(|x| u16::try_from(x).ok()).ok_or(WRONG);
        let big = |v: &[u8]| int(v).ok_or(WRONG);
        match (stream, mem.key) {
            (_, b"tap") => (m.tap, seen) = (small(v)?, seen | 1),
            (_, k) if k == size_key => (m.size, seen) = (small(v)?, seen | 2),
            (_, b"sample") => (m.sample, seen) = (big(v)?, seen | 4),
            (_, b"missed") => (m.missed, seen) = (big(v)?, seen | 8),
            (AnalysisStream::Scope, b"samples_per_point") => {
                m.samples_per_point = u32::try_from(big(v)?).map_err(|_| WRONG)?;
                seen |= 16;
            }
            (AnalysisStream::Spectrum, b"sample_rate") => {
                m.sample_rate = u32::try_from(big(v)?).map_err(|_| WRONG)?;
                seen |= 16;
            }
            (AnalysisStream::Scope, b"min") | (AnalysisStream::Spectrum, b"db") => {
                first = Some(v);
            }
            (AnalysisStream::Scope, b"max") => second = Some(v),
            _ => {}
        }
        Ok(())
    })?;
    if seen != 31 {
        return Err(MISPLACED);
    }
    let values = match (attachment, first, second, stream) {
        (Some(a), None, None, _) if a.len() == 4 * m.value_count() => AnalysisValues::F32Le(a),
        (None, Some(a), b @ Some(_), AnalysisStream::Scope) => AnalysisValues::Json(a, b),
        (None, Some(a), None, AnalysisStream::Spectrum) => AnalysisValues::Json(a, None),
        _ => return Err(MISPLACED),
    };
    Ok((m, values))
}

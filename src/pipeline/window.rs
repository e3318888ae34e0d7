//! Event time and windows, free of I/O.
//!
//! - [`windows_of`]: the windows `[start, end)` an event time falls in.
//! - [`window_key`]: a window's state key sorts by window end, so the windows the watermark
//!   closes are one bounded range scan from the start of the operator's namespace: these keys
//!   are the event-time timers of windows, and no scan ever reads an open window.
//! - [`Watermarks`]: a task's watermark, the minimum over its inputs (source partitions) that
//!   are not idle, never going back.
//! - [`event_time`]: a record's event time from a field or its Kafka timestamp.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{EventTime, TimeFormat, Window};
use crate::pipeline::state_keys::KeyTag;

/// Before the first event: every window is open.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Tag bytes inside an aggregate's namespace: windows, then its persisted watermarks.
const TAG_WINDOW: u8 = KeyTag::Window.byte();
/// Off the tags of `pipeline::timers` (0, 1): a stream-stream join keeps both its buffers'
/// time index and its watermarks in one namespace.
const TAG_INPUT_WATERMARK: u8 = KeyTag::InputWatermark.byte();
const TAG_TASK_WATERMARK: u8 = KeyTag::TaskWatermark.byte();

/// The starts and ends of the windows holding `ts`, oldest first.
pub fn windows_of(w: &Window, ts: i64) -> Vec<(i64, i64)> {
    let last_start = ts.saturating_sub(ts.rem_euclid(w.advance_ms));
    let mut out = Vec::with_capacity(usize::try_from(w.size_ms / w.advance_ms).unwrap_or(1));
    let mut start = last_start;
    while start > ts.saturating_sub(w.size_ms) {
        out.push((start, start.saturating_add(w.size_ms)));
        match start.checked_sub(w.advance_ms) {
            Some(s) => start = s,
            None => break,
        }
    }
    out.reverse();
    out
}

/// Whether the window ending at `end` has closed at `watermark`: it fires once the watermark
/// reaches its last millisecond plus the allowed lateness, and takes no record after that.
pub fn is_closed(w: &Window, end: i64, watermark: i64) -> bool {
    watermark != NO_WATERMARK
        && end.saturating_sub(1).saturating_add(w.allowed_lateness_ms) <= watermark
}

/// The exclusive upper bound on window ends that are closed at `watermark` (for the scan).
pub fn closed_below(w: &Window, watermark: i64) -> i64 {
    if watermark == NO_WATERMARK {
        return NO_WATERMARK;
    }
    watermark
        .saturating_sub(w.allowed_lateness_ms)
        .saturating_add(2)
}

/// Big-endian with the sign bit flipped: byte order is numeric order.
pub fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_sortable(b: &[u8]) -> Option<i64> {
    let b: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// The key (inside the aggregate's namespace) of `key`'s window ending at `end`.
pub fn window_key(end: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(TAG_WINDOW);
    out.extend_from_slice(&sortable(end));
    out.extend_from_slice(key);
    out
}

/// The lower bound of every window key, and the exclusive bound of those ending before `end`.
pub fn window_range(end: i64) -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_WINDOW], window_key(end, &[]))
}

/// (window end, key) of a [`window_key`].
pub fn split_window_key(k: &[u8]) -> Option<(i64, &[u8])> {
    let (&tag, rest) = k.split_first()?;
    if tag != TAG_WINDOW || rest.len() < 8 {
        return None;
    }
    let (end, key) = rest.split_at(8);
    Some((from_sortable(end)?, key))
}

/// A task's watermark: each input's own (its highest event time minus the out-of-orderness),
/// combined as the minimum over the inputs that are not idle. The combined watermark never
/// goes back; an input that comes back from idleness holds it from then on.
///
/// An input is idle only when its source task says so ([`marker_due`]: read to its end and
/// quiet for the idle timeout), never because this task has not heard from it for a while:
/// how long it has not heard depends on how this task reads (a checkpoint that blocked the
/// loop for 8 s made a slow input idle as soon as the task read again, and the watermark
/// jumped past that input's records, CHAOS.md defect 12), and a broker outage silences every
/// input at once (32,322 records dropped as late in one run, before the rule that followed).
/// When every input is idle, the first to come back does not lead alone: the others hold the
/// watermark again until they speak or say again that they are idle (a cluster run dropped 887
/// records as late after its input producer stalled and every source partition went idle).
#[derive(Debug, Clone)]
pub struct Watermarks {
    inputs: BTreeMap<i32, Input>,
    combined: i64,
}

#[derive(Debug, Clone, Copy)]
struct Input {
    watermark: i64,
    idle: bool,
}

impl Watermarks {
    /// `inputs` start without a watermark, and not idle.
    pub fn new(inputs: impl IntoIterator<Item = i32>) -> Self {
        Self {
            inputs: inputs
                .into_iter()
                .map(|i| {
                    (
                        i,
                        Input {
                            watermark: NO_WATERMARK,
                            idle: false,
                        },
                    )
                })
                .collect(),
            combined: NO_WATERMARK,
        }
    }

    pub fn current(&self) -> i64 {
        self.combined
    }

    /// Input `input` reached `watermark` (or spoke without advancing); `idle`: its source task
    /// says it is read to its end and quiet (until its next record or marker).
    pub fn observe(&mut self, input: i32, watermark: i64, idle: bool) {
        // every input idle (the whole stream paused, or an outage its sources took for quiet):
        // the first back does not lead alone, or the others' records, read a moment later,
        // come late; each holds the watermark until it speaks or says again that it is idle
        if !idle
            && self.inputs.get(&input).is_some_and(|i| i.idle)
            && self.inputs.values().all(|i| i.idle)
        {
            for i in self.inputs.values_mut() {
                i.idle = false;
            }
        }
        let e = self.inputs.entry(input).or_insert(Input {
            watermark: NO_WATERMARK,
            idle,
        });
        e.watermark = e.watermark.max(watermark);
        e.idle = idle;
    }

    /// Recomputes the combined watermark; returns it when it moved forward.
    pub fn advance(&mut self) -> Option<i64> {
        let active = self
            .inputs
            .values()
            .filter(|i| !i.idle)
            .map(|i| i.watermark)
            .min()?;
        (active > self.combined).then(|| {
            self.combined = active;
            active
        })
    }

    /// State entries (key inside the aggregate's namespace, value) that persist this.
    pub fn to_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = vec![(
            vec![TAG_TASK_WATERMARK],
            self.combined.to_be_bytes().to_vec(),
        )];
        for (input, i) in &self.inputs {
            let mut k = vec![TAG_INPUT_WATERMARK];
            k.extend_from_slice(&input.to_be_bytes());
            out.push((k, i.watermark.to_be_bytes().to_vec()));
        }
        out
    }

    /// The range of keys [`Watermarks::to_entries`] writes.
    pub fn entry_range() -> (Vec<u8>, Vec<u8>) {
        (vec![TAG_INPUT_WATERMARK], vec![TAG_TASK_WATERMARK + 1])
    }

    /// Takes back one persisted entry; unknown ones are ignored.
    pub fn restore_entry(&mut self, key: &[u8], value: &[u8]) {
        let Ok(v) = <[u8; 8]>::try_from(value).map(i64::from_be_bytes) else {
            return;
        };
        match key.split_first() {
            Some((&TAG_TASK_WATERMARK, [])) => self.combined = self.combined.max(v),
            Some((&TAG_INPUT_WATERMARK, rest)) => {
                if let Ok(input) = <[u8; 4]>::try_from(rest).map(i32::from_be_bytes) {
                    self.observe(input, v, false);
                }
            }
            _ => {}
        }
    }
}

/// A source task's marker: its watermark, and whether it declares its partition idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub watermark: i64,
    pub idle: bool,
}

/// Where a source task stands at a checkpoint, for [`marker_due`].
#[derive(Debug, Clone, Copy)]
pub struct SourceView {
    /// Its highest event time processed, and its last marker's watermark.
    pub max_event_time: i64,
    pub marker_sent: i64,
    /// It processed a record since its last marker.
    pub spoke: bool,
    /// Its partition may hold records it has not read (from the consumer's view of the last
    /// stable offset; unknown counts as yes).
    pub behind: bool,
    /// Since its last record (or its start), and since its last idle marker, if one was sent
    /// and no record came after it.
    pub quiet: Duration,
    pub idle_marked: Option<Duration>,
}

/// The marker a source task sends at a checkpoint, if one is due:
/// - its watermark, when it moved past the last marker's, when the task processed a record
///   since (`spoke`), or when its partition holds records it has not read yet (`behind`: a
///   fetch stalled after a broker restart). A task that is behind keeps sending markers, with
///   no watermark if it has read nothing yet, so that downstream tasks keep waiting for it.
/// - an idle marker, when its partition is read to its end and has been quiet for the idle
///   timeout: idleness means nothing to read, not slow to arrive, as Kafka Streams' KIP-695
///   has it, and only the reader of the partition can tell. It is sent again every idle
///   timeout while the partition stays quiet, so a downstream task restored meanwhile hears it.
pub fn marker_due(et: &EventTime, v: &SourceView) -> Option<Marker> {
    let wm = if v.max_event_time == NO_WATERMARK {
        NO_WATERMARK
    } else {
        watermark_after(et, v.max_event_time)
    };
    let moved = wm != NO_WATERMARK && (wm > v.marker_sent || v.spoke);
    if moved || v.behind {
        return Some(Marker {
            watermark: wm,
            idle: false,
        });
    }
    let idle =
        v.quiet >= et.idle_timeout && v.idle_marked.is_none_or(|since| since >= et.idle_timeout);
    idle.then_some(Marker {
        watermark: wm,
        idle: true,
    })
}

/// The wall clock in ms since the epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An input's watermark once it has seen event time `max_ts`.
pub fn watermark_after(et: &EventTime, max_ts: i64) -> i64 {
    let ooo = i64::try_from(et.max_out_of_orderness.as_millis()).unwrap_or(i64::MAX);
    max_ts.saturating_sub(ooo).saturating_sub(1)
}

/// A record's event time in ms: from `et.field` of `value`, or the Kafka `timestamp`.
pub fn event_time(et: &EventTime, value: &Value, timestamp: Option<i64>) -> Result<i64, String> {
    let Some(field) = &et.field else {
        return timestamp.ok_or_else(|| "the record has no Kafka timestamp".to_string());
    };
    let v = value
        .get(field)
        .ok_or_else(|| format!("event time field {field:?} is missing"))?;
    let bad = |what: &str| {
        format!(
            "event time field {field:?} is {}, not {what}",
            super::operator::kind(v)
        )
    };
    match et.format {
        TimeFormat::UnixMs => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| bad("a number of milliseconds")),
        TimeFormat::UnixS => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|s| (s * 1000.0).round() as i64)
            .ok_or_else(|| bad("a number of seconds")),
        TimeFormat::Rfc3339 => {
            let s = v.as_str().ok_or_else(|| bad("an RFC 3339 string"))?;
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                format!("event time field {field:?}: {s:?} is not an RFC 3339 UTC time ({e})")
            })?;
            match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_millis()).map_err(|_| bad("a time in range")),
                Err(e) => i64::try_from(e.duration().as_millis())
                    .map(|ms| -ms)
                    .map_err(|_| bad("a time in range")),
            }
        }
    }
}

pub mod session;

/// The header with a source partition's watermark: `"{partition}:{watermark ms}"`.
pub const WATERMARK_HEADER: &str = "flumen.watermark";

/// The header of an idle marker (beside its [`WATERMARK_HEADER`]): its source partition is
/// read to its end and quiet ([`marker_due`]). Its value is not read.
pub const IDLE_HEADER: &str = "flumen.idle";

/// The header with a repartition record's event time in ms (not the Kafka timestamp: brokers
/// refuse timestamps over `log.message.timestamp.after.max.ms` ahead of their clock, one hour by
/// default, and event times need not be near the wall clock).
pub const EVENT_TIME_HEADER: &str = "flumen.event_time";

/// The event time in an [`EVENT_TIME_HEADER`]'s value.
pub fn parse_event_time(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The (source partition, watermark) in a [`WATERMARK_HEADER`]'s value.
pub fn parse_watermark(v: &[u8]) -> Option<(i32, i64)> {
    let (p, w) = std::str::from_utf8(v).ok()?.split_once(':')?;
    Some((p.parse().ok()?, w.parse().ok()?))
}

pub fn format_watermark(partition: i32, watermark: i64) -> String {
    format!("{partition}:{watermark}")
}

#[cfg(test)]
mod tests;

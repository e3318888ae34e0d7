//! Windowed stream-stream join (inner, left, outer), free of I/O. Both streams are buffered in the keyed
//! state of the stateful task with their partition (the other stream's topic must be
//! co-partitioned with the keyed stream, as for the table join):
//!
//! - `tag 4 (this stream) | 5 (the other) ‖ len(key) ‖ key ‖ t ‖ partition ‖ offset → record`:
//!   a key's records of one side, ordered by event time, so a record's partners are one range
//!   scan over `[t − within, t + within]`;
//! - a timer `1 ‖ t ‖ entry key → ()` per entry (the layout of [`super::timers`]): every
//!   entry by time, for the cleanup;
//! - `tag 7 ‖ side → highest event time seen` of the other stream. The join's watermark is the
//!   lower of this stream's watermark (per source partition, combined like a window's) and the
//!   other's; a record older than it is late, and entries older than it minus `within` are
//!   deleted.
//! - `tag 6 ‖ entry key → ()`: the entry found a partner (left and outer joins, for the sides
//!   whose unmatched records go out). An entry deleted without one goes out alone then: no
//!   record that is not late can pair with it any more.

use serde_json::Value;

use super::window::sortable;
use crate::config::StreamJoinMode;
use crate::pipeline::state_keys::KeyTag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The pipeline's own (keyed) stream.
    This,
    /// The `stream` topic.
    Other,
}

impl Side {
    fn tag(self) -> u8 {
        match self {
            Self::This => KeyTag::ThisEntry.byte(),
            Self::Other => KeyTag::OtherEntry.byte(),
        }
    }

    pub fn opposite(self) -> Self {
        match self {
            Self::This => Self::Other,
            Self::Other => Self::This,
        }
    }
}

const TAG_MAX: u8 = KeyTag::OtherMax.byte();
const TAG_MATCHED: u8 = KeyTag::Matched.byte();

fn prefix(side: Side, key: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + key.len() + 20);
    out.push(side.tag());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The entry of the record at (`partition`, `offset`) of `side`, key `key`, event time `t`.
pub fn entry_key(side: Side, key: &[u8], t: i64, partition: i32, offset: i64) -> Vec<u8> {
    let mut out = prefix(side, key);
    out.extend_from_slice(&sortable(t));
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// `key`'s entries of `side` with event time in `[from, to]`: `[lo, hi)`.
pub fn partners(side: Side, key: &[u8], from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
    let mut lo = prefix(side, key);
    let mut hi = lo.clone();
    lo.extend_from_slice(&sortable(from));
    hi.extend_from_slice(&sortable(to.saturating_add(1)));
    (lo, hi)
}

/// Where a side's highest event time is kept.
pub fn max_key(side: Side) -> Vec<u8> {
    vec![TAG_MAX, side.tag()]
}

/// Where the entry `entry` notes that it found a partner.
pub fn matched_key(entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entry.len());
    out.push(TAG_MATCHED);
    out.extend_from_slice(entry);
    out
}

/// The entry key of a [`matched_key`].
pub fn entry_of_matched_key(k: &[u8]) -> Option<&[u8]> {
    k.strip_prefix(&[TAG_MATCHED])
}

/// Whether `mode` sends out the records of `side` that found no partner.
pub fn emits_unmatched(mode: StreamJoinMode, side: Side) -> bool {
    match mode {
        StreamJoinMode::Inner => false,
        StreamJoinMode::Left => side == Side::This,
        StreamJoinMode::Outer => true,
    }
}

/// The partition and offset an entry's record was read at (the last 12 bytes of its key).
pub fn entry_origin(entry: &[u8]) -> Option<(i32, i64)> {
    let tail = entry.get(entry.len().checked_sub(12)?..)?;
    let (p, o) = tail.split_first_chunk::<4>()?;
    Some((
        i32::from_be_bytes(*p),
        i64::from_be_bytes(o.try_into().ok()?),
    ))
}

/// The side and the record key of an entry key.
pub fn entry_parts(entry: &[u8]) -> Option<(Side, &[u8])> {
    let (&tag, rest) = entry.split_first()?;
    let side = match tag {
        4 => Side::This,
        5 => Side::Other,
        _ => return None,
    };
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    Some((side, rest.get(..len)?))
}

/// The output of a record that found no partner: this stream's record with `into` null, or
/// the other stream's record alone under `into`.
pub fn unmatched(side: Side, record: &Value, into: &str) -> Option<Value> {
    match side {
        Side::This => joined(record, &Value::Null, into),
        Side::Other => Some(serde_json::json!({ into: record })),
    }
}

pub fn decode_time(v: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(v).ok().map(i64::from_be_bytes)
}

/// The join's watermark: the lower of this stream's (its source partitions' combined
/// watermark) and the other stream's (its highest event time minus the out-of-orderness, less
/// 1 ms), or this stream's alone while the other is idle (no record within the source's idle
/// timeout, as Flink's `withIdleness`). A record older than it is late; an entry older than it
/// minus `within` can only meet late records. `None` until the streams it needs have one.
pub fn late_before(
    this_wm: i64,
    other_max: Option<i64>,
    other_idle: bool,
    ooo: i64,
) -> Option<i64> {
    if this_wm == super::window::NO_WATERMARK {
        return None;
    }
    if other_idle {
        return Some(this_wm);
    }
    let other_wm = other_max?.saturating_sub(ooo).saturating_sub(1);
    Some(this_wm.min(other_wm))
}

/// The output of a pair: this stream's record with the other's under `into`.
pub fn joined(this: &Value, other: &Value, into: &str) -> Option<Value> {
    let mut out = this.as_object()?.clone();
    out.insert(into.to_string(), other.clone());
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partners_are_the_keys_records_within_the_bound() {
        let (lo, hi) = partners(Side::Other, b"k", 100, 200);
        for (key, t, inside) in [
            (&b"k"[..], 100, true),
            (b"k", 200, true),
            (b"k", 99, false),
            (b"k", 201, false),
            (b"k2", 150, false),
        ] {
            let e = entry_key(Side::Other, key, t, 3, 42);
            assert_eq!(e >= lo && e < hi, inside, "{key:?} {t}");
        }
        let e = entry_key(Side::This, b"k", 150, 0, 1);
        assert!(!(e >= lo && e < hi), "the other side is elsewhere");
    }

    #[test]
    fn unmatched_records_by_mode_and_side() {
        use StreamJoinMode::*;
        assert!(!emits_unmatched(Inner, Side::This) && !emits_unmatched(Inner, Side::Other));
        assert!(emits_unmatched(Left, Side::This) && !emits_unmatched(Left, Side::Other));
        assert!(emits_unmatched(Outer, Side::This) && emits_unmatched(Outer, Side::Other));
        let e = entry_key(Side::Other, b"user-7", -5, 2, 9);
        assert_eq!(entry_parts(&e), Some((Side::Other, &b"user-7"[..])));
        assert_eq!(entry_origin(&e), Some((2, 9)));
        assert_eq!(entry_parts(&matched_key(&e)), None);
        // the join shares its namespace with the task's persisted watermarks: none of its
        // keys may fall in their range
        let (lo, hi) = crate::pipeline::window::Watermarks::entry_range();
        for k in [matched_key(&e), max_key(Side::Other), e.clone()] {
            assert!(!(k >= lo && k < hi), "{k:?}");
        }
        assert_eq!(entry_parts(&[4, 0, 0, 0, 9, b'k']), None, "a short key");
        assert_eq!(
            unmatched(Side::This, &json!({"a": 1}), "p"),
            Some(json!({"a": 1, "p": null}))
        );
        assert_eq!(
            unmatched(Side::Other, &json!({"b": 2}), "p"),
            Some(json!({"p": {"b": 2}}))
        );
    }

    #[test]
    fn the_join_watermark_and_the_joined_record() {
        assert_eq!(late_before(100, Some(80), false, 5), Some(74));
        assert_eq!(late_before(60, Some(80), false, 5), Some(60));
        assert_eq!(late_before(100, None, false, 5), None);
        assert_eq!(
            late_before(crate::pipeline::window::NO_WATERMARK, Some(80), false, 5),
            None
        );
        // an idle other stream holds nothing back, whether it ever spoke or not
        assert_eq!(late_before(100, Some(80), true, 5), Some(100));
        assert_eq!(late_before(100, None, true, 5), Some(100));
        assert_eq!(
            joined(&json!({"a": 1}), &json!({"b": 2}), "other"),
            Some(json!({"a": 1, "other": {"b": 2}}))
        );
    }
}

//! The key layout of keyed operators with timers (dedupe's expiries, custom operators' timers),
//! inside the operator's namespace: `0 ‖ key` → the key's value, and `1 ‖ time (sortable) ‖ key`
//! → nothing, one entry per timer (`2 ‖ …` for custom operators' event-time timers). Timers
//! sort by time, so the due ones are one range scan up to now (or the watermark):
//! time-bucketed keys, never a full scan of the state.

use super::window::sortable;
use crate::pipeline::state_keys::KeyTag;

/// Processing time now, in ms since the epoch (the clock of TTLs and custom timers).
pub fn now_ms() -> i64 {
    i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX)
}

const TAG_VALUE: u8 = KeyTag::Value.byte();
const TAG_TIMER: u8 = KeyTag::Timer.byte();
const TAG_EVENT_TIMER: u8 = KeyTag::EventTimer.byte();

/// Where `key`'s value lives.
pub fn value_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(TAG_VALUE);
    out.extend_from_slice(key);
    out
}

/// The timer of `key` at `at`.
pub fn timer_key(at: i64, key: &[u8]) -> Vec<u8> {
    tagged_timer_key(TAG_TIMER, at, key)
}

/// The event-time timer of `key` at `at` (custom operators).
pub fn event_timer_key(at: i64, key: &[u8]) -> Vec<u8> {
    tagged_timer_key(TAG_EVENT_TIMER, at, key)
}

fn tagged_timer_key(tag: u8, at: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(tag);
    out.extend_from_slice(&sortable(at));
    out.extend_from_slice(key);
    out
}

/// The timers due at `now` (time ≤ now): `[from, to)`.
pub fn due_range(now: i64) -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_TIMER], timer_key(now.saturating_add(1), &[]))
}

/// The event-time timers due at `watermark` (time ≤ watermark): `[from, to)`.
pub fn event_due_range(watermark: i64) -> (Vec<u8>, Vec<u8>) {
    (
        vec![TAG_EVENT_TIMER],
        event_timer_key(watermark.saturating_add(1), &[]),
    )
}

/// (time, key) of a [`timer_key`] or an [`event_timer_key`].
pub fn split_timer_key(k: &[u8]) -> Option<(i64, &[u8])> {
    match k.split_first() {
        Some((&(TAG_TIMER | TAG_EVENT_TIMER), rest)) if rest.len() >= 8 => {
            let (t, key) = rest.split_at(8);
            let t = <[u8; 8]>::try_from(t).ok()?;
            Some(((u64::from_be_bytes(t) ^ (1 << 63)) as i64, key))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_are_one_bounded_range() {
        let (from, to) = due_range(100);
        for (at, due) in [(-5, true), (100, true), (101, false)] {
            let k = timer_key(at, b"user");
            assert_eq!(k >= from && k < to, due, "{at}");
            assert_eq!(split_timer_key(&k), Some((at, &b"user"[..])));
        }
        assert!(value_key(b"zzz") < from, "values sort before the timers");
        let (efrom, eto) = event_due_range(100);
        let e = event_timer_key(100, b"user");
        assert!(
            e >= efrom && e < eto && e >= to,
            "event timers apart, after the others"
        );
        assert!(event_timer_key(i64::MIN, b"") >= to);
        assert_eq!(split_timer_key(&e), Some((100, &b"user"[..])));
    }
}

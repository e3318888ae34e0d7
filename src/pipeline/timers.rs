//! The key layout of keyed operators with timers (dedupe's expiries, custom operators' timers),
//! inside the operator's namespace: `0 ‖ key` → the key's value, and `1 ‖ time (sortable) ‖ key`
//! → nothing, one entry per timer. Timers sort by time, so the due ones are one range scan up
//! to now: time-bucketed keys, never a full scan of the state.

use super::window::sortable;

/// Processing time now, in ms since the epoch (the clock of TTLs and custom timers).
pub fn now_ms() -> i64 {
    i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX)
}

const TAG_VALUE: u8 = 0;
const TAG_TIMER: u8 = 1;

/// Where `key`'s value lives.
pub fn value_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(TAG_VALUE);
    out.extend_from_slice(key);
    out
}

/// The timer of `key` at `at`.
pub fn timer_key(at: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(TAG_TIMER);
    out.extend_from_slice(&sortable(at));
    out.extend_from_slice(key);
    out
}

/// The timers due at `now` (time ≤ now): `[from, to)`.
pub fn due_range(now: i64) -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_TIMER], timer_key(now.saturating_add(1), &[]))
}

/// (time, key) of a [`timer_key`].
pub fn split_timer_key(k: &[u8]) -> Option<(i64, &[u8])> {
    match k.split_first() {
        Some((&TAG_TIMER, rest)) if rest.len() >= 8 => {
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
    }
}

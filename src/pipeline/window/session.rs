//! Session windows, free of I/O: a record at `t` opens `[t, t + gap)`, and the windows of a key
//! that overlap it merge into one (Flink's merging session windows).
//!
//! A session is stored as a window (`tag 0 ‖ end ‖ key`, so the watermark closes it by the same
//! range scan as the fixed windows) whose value starts with the session's start, plus a per-key
//! index `tag 3 ‖ len(key) ‖ key ‖ start → end` that finds a key's open sessions.

use super::sortable;
use crate::pipeline::state_keys::KeyTag;

const TAG_SESSION_INDEX: u8 = KeyTag::SessionIndex.byte();

fn index_prefix(key: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + key.len() + 8);
    out.push(TAG_SESSION_INDEX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The index entry of `key`'s session starting at `start`.
pub fn index_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut out = index_prefix(key);
    out.extend_from_slice(&sortable(start));
    out
}

/// All index entries of `key`: `[from, to)`.
pub fn index_range(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let from = index_prefix(key);
    let mut to = from.clone();
    to.extend_from_slice(&[0xFF; 9]);
    (from, to)
}

/// The record key of an [`index_key`].
pub fn key_of_index_key(k: &[u8]) -> Option<&[u8]> {
    let rest = k.strip_prefix(&[TAG_SESSION_INDEX])?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() == len + 8 {
        rest.get(..len)
    } else {
        None
    }
}

/// The start in an [`index_key`] (its last 8 bytes).
pub fn start_of_index_key(k: &[u8]) -> Option<i64> {
    let b: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// A session's stored value: its start, then the aggregate's state.
pub fn value(start: i64, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + state.len());
    out.extend_from_slice(&start.to_be_bytes());
    out.extend_from_slice(state);
    out
}

/// (start, aggregate state) of a stored session.
pub fn split_value(v: &[u8]) -> Option<(i64, &[u8])> {
    let (start, state) = v.split_at_checked(8)?;
    Some((i64::from_be_bytes(start.try_into().ok()?), state))
}

/// The session a record at `ts` makes with the key's open `sessions` (start, end): the merged
/// bounds and which sessions it absorbs (indexes into `sessions`).
pub fn merge(sessions: &[(i64, i64)], ts: i64, gap: i64) -> ((i64, i64), Vec<usize>) {
    let (mut start, mut end) = (ts, ts.saturating_add(gap));
    let mut absorbed: Vec<usize> = Vec::new();
    loop {
        let before = absorbed.len();
        for (i, (s, e)) in sessions.iter().enumerate() {
            if !absorbed.contains(&i) && *s < end && start < *e {
                start = start.min(*s);
                end = end.max(*e);
                absorbed.push(i);
            }
        }
        if absorbed.len() == before {
            break;
        }
    }
    absorbed.sort_unstable();
    ((start, end), absorbed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_record_between_two_sessions_bridges_them() {
        let sessions = [(0, 10), (15, 25), (100, 110)];
        assert_eq!(merge(&sessions, 8, 10), ((0, 25), vec![0, 1]));
        assert_eq!(merge(&sessions, 50, 10), ((50, 60), vec![]));
        assert_eq!(merge(&sessions, 3, 2), ((0, 10), vec![0]));
    }

    #[test]
    fn index_keys_of_one_key_are_one_range() {
        let (from, to) = index_range(b"u1");
        for start in [i64::MIN, -1, 0, i64::MAX] {
            let k = index_key(b"u1", start);
            assert!(k >= from && k < to);
            assert_eq!(start_of_index_key(&k), Some(start));
        }
        // a longer key with the same beginning is elsewhere
        let other = index_key(b"u10", 0);
        assert!(!(other >= from && other < to));
        assert_eq!(split_value(&value(-7, b"st")), Some((-7, &b"st"[..])));
    }

    proptest! {
        /// Sessions built record by record never overlap, and hold every record.
        #[test]
        fn sessions_stay_disjoint(times in proptest::collection::vec(0i64..1_000, 1..40), gap in 1i64..50) {
            let mut sessions: Vec<(i64, i64)> = Vec::new();
            for ts in &times {
                let (merged, absorbed) = merge(&sessions, *ts, gap);
                for i in absorbed.iter().rev() {
                    sessions.remove(*i);
                }
                sessions.push(merged);
            }
            for (i, a) in sessions.iter().enumerate() {
                for b in &sessions[i + 1..] {
                    prop_assert!(a.1 <= b.0 || b.1 <= a.0, "{a:?} {b:?} overlap");
                }
            }
            for ts in &times {
                prop_assert!(sessions.iter().any(|(s, e)| s <= ts && ts < e));
            }
        }
    }
}

//! Dedupe within a TTL, free of I/O: the first record of a key passes and is remembered until
//! `ttl` after it (processing time); the others meanwhile are dropped.
//!
//! Each remembered key has two entries in the operator's namespace, in the layout of
//! [`super::timers`]: its value `0 ‖ key` → its expiry (ms, big-endian), for the lookup, and a
//! timer `1 ‖ expiry ‖ key` → nothing, an index by expiry. Expired keys are deleted by one range scan of the index up to now (time-bucketed
//! keys, no full scan); a lookup also treats an expired entry as absent, so the answer never
//! depends on when the cleanup ran.

/// The expiry at the start of a stored value (dedupe's whole value; a TTL aggregate's value
/// is followed by its state).
pub fn decode_expiry(v: &[u8]) -> Option<i64> {
    v.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
}

/// `Some(expiry)` when a record of a key whose entry is `previous` passes at `now` (and the key
/// is remembered until `expiry`); `None` for a duplicate.
pub fn admit(previous: Option<&[u8]>, now: i64, ttl_ms: i64) -> Option<i64> {
    match previous.and_then(decode_expiry) {
        Some(expiry) if expiry > now => None,
        _ => Some(now.saturating_add(ttl_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_duplicates_drop_until_the_ttl() {
        let e = admit(None, 1_000, 500).unwrap();
        assert_eq!(e, 1_500);
        let stored = e.to_be_bytes();
        assert_eq!(admit(Some(&stored), 1_499, 500), None);
        assert_eq!(admit(Some(&stored), 1_500, 500), Some(2_000));
    }
}

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn tumbling(size: i64) -> Window {
    Window {
        size_ms: size,
        advance_ms: size,
        gap_ms: None,
        allowed_lateness_ms: 0,
        late_topic: None,
    }
}

fn hopping(size: i64, advance: i64) -> Window {
    Window {
        advance_ms: advance,
        ..tumbling(size)
    }
}

#[test]
fn tumbling_windows_are_aligned_to_the_epoch() {
    let w = tumbling(10);
    assert_eq!(windows_of(&w, 0), [(0, 10)]);
    assert_eq!(windows_of(&w, 9), [(0, 10)]);
    assert_eq!(windows_of(&w, 10), [(10, 20)]);
    assert_eq!(windows_of(&w, -1), [(-10, 0)]);
}

#[test]
fn hopping_windows_overlap() {
    assert_eq!(windows_of(&hopping(10, 5), 7), [(0, 10), (5, 15)]);
    assert_eq!(windows_of(&hopping(10, 3), 7), [(0, 10), (3, 13), (6, 16)]);
}

#[test]
fn a_window_closes_at_its_last_millisecond_plus_lateness() {
    let mut w = tumbling(10);
    assert!(!is_closed(&w, 10, 8));
    assert!(is_closed(&w, 10, 9));
    assert!(!is_closed(&w, 10, NO_WATERMARK));
    w.allowed_lateness_ms = 5;
    assert!(!is_closed(&w, 10, 13));
    assert!(is_closed(&w, 10, 14));
    // the scan bound agrees with is_closed
    assert!(10 < closed_below(&w, 14));
    assert!(10 >= closed_below(&w, 13));
}

#[test]
fn watermark_is_the_minimum_of_inputs_that_are_not_idle() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let mut wm = Watermarks::new([0, 1], idle, t0);
    wm.observe(0, 100, t0);
    assert_eq!(wm.advance(t0), None, "input 1 has not spoken yet");
    wm.observe(1, 50, t0);
    assert_eq!(wm.advance(t0), Some(50));
    wm.observe(0, 150, t0 + Duration::from_secs(5));
    wm.observe(0, 200, t0 + Duration::from_secs(11));
    // input 1 has been quiet for 11 s: it no longer holds the watermark back
    assert_eq!(wm.advance(t0 + Duration::from_secs(11)), Some(200));
    // it comes back lower: the watermark does not go back
    wm.observe(1, 60, t0 + Duration::from_secs(12));
    assert_eq!(wm.advance(t0 + Duration::from_secs(12)), None);
    assert_eq!(wm.current(), 200);
    wm.observe(1, 300, t0 + Duration::from_secs(12));
    wm.observe(0, 250, t0 + Duration::from_secs(12));
    assert_eq!(wm.advance(t0 + Duration::from_secs(12)), Some(250));
}

/// A silence of every input (an outage) is not idleness: the first input heard after it does
/// not set the watermark alone, the others get a full idle timeout to speak again.
#[test]
fn after_every_input_was_silent_none_leads_alone() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut wm = Watermarks::new([0, 1], s(10), t0);
    wm.observe(0, 100, t0);
    wm.observe(1, 100, t0);
    assert_eq!(wm.advance(t0), Some(100));
    // both silent for 30 s; input 0 is back first, far ahead
    wm.observe(0, 500, t0 + s(30));
    assert_eq!(
        wm.advance(t0 + s(30)),
        None,
        "input 1 still holds the watermark"
    );
    wm.observe(1, 300, t0 + s(32));
    assert_eq!(wm.advance(t0 + s(32)), Some(300));
    // input 1 goes quiet alone: after the idle timeout it no longer holds input 0 back
    wm.observe(0, 600, t0 + s(41));
    assert_eq!(wm.advance(t0 + s(41)), None);
    wm.observe(0, 700, t0 + s(43));
    assert_eq!(wm.advance(t0 + s(43)), Some(700));
}

#[test]
fn watermarks_survive_their_entries() {
    let t0 = Instant::now();
    let mut wm = Watermarks::new([0, 1, 2], Duration::from_secs(1), t0);
    wm.observe(0, 10, t0);
    wm.observe(1, 20, t0);
    wm.observe(2, 30, t0);
    wm.advance(t0);
    let mut back = Watermarks::new([0, 1, 2], Duration::from_secs(1), t0);
    for (k, v) in wm.to_entries() {
        let (lo, hi) = Watermarks::entry_range();
        assert!(k >= lo && k < hi);
        back.restore_entry(&k, &v, t0);
    }
    assert_eq!(back.current(), 10);
    back.observe(0, 40, t0);
    assert_eq!(back.advance(t0), Some(20));
}

#[test]
fn persisted_watermarks_stay_clear_of_timers_and_windows() {
    // a stream-stream join keeps its time index (timers) and its watermarks in one namespace
    let (lo, hi) = Watermarks::entry_range();
    let (_, timers_end) = crate::pipeline::timers::due_range(i64::MAX);
    assert!(timers_end <= lo);
    assert!(window_key(i64::MAX, b"\xff\xff") < lo);
    let (_, join_hi) = crate::pipeline::stream_join::partners(
        crate::pipeline::stream_join::Side::Other,
        b"\xff",
        i64::MAX - 1,
        i64::MAX - 1,
    );
    assert!(join_hi <= lo && hi > lo);
}

#[test]
fn event_time_from_fields_and_formats() {
    let et = |field: Option<&str>, format| EventTime {
        field: field.map(str::to_string),
        format,
        max_out_of_orderness: Duration::from_millis(5),
        idle_timeout: Duration::from_secs(1),
    };
    let v = json!({"ms": 1500, "s": 1.5, "t": "2026-11-30T00:00:01.500Z", "bad": "x"});
    assert_eq!(
        event_time(&et(Some("ms"), TimeFormat::UnixMs), &v, None),
        Ok(1500)
    );
    assert_eq!(
        event_time(&et(Some("s"), TimeFormat::UnixS), &v, None),
        Ok(1500)
    );
    assert_eq!(
        event_time(&et(Some("t"), TimeFormat::Rfc3339), &v, None),
        Ok(1_795_996_801_500)
    );
    assert_eq!(
        event_time(&et(None, TimeFormat::UnixMs), &v, Some(7)),
        Ok(7)
    );
    let e = event_time(&et(Some("bad"), TimeFormat::UnixMs), &v, None).unwrap_err();
    assert!(e.contains("\"bad\"") && e.contains("a string"), "{e}");
    let e = event_time(&et(Some("nope"), TimeFormat::UnixMs), &v, None).unwrap_err();
    assert!(e.contains("missing"), "{e}");
    assert_eq!(watermark_after(&et(None, TimeFormat::UnixMs), 100), 94);
}

proptest! {
    #[test]
    fn every_window_of_a_time_holds_it(ts in -1_000_000_000i64..1_000_000_000, size in 1i64..10_000, k in 1i64..20) {
        let advance = (size / k).max(1);
        let w = hopping(size, advance);
        let ws = windows_of(&w, ts);
        prop_assert!(!ws.is_empty());
        for (s, e) in &ws {
            prop_assert!(*s <= ts && ts < *e);
            prop_assert_eq!(e - s, size);
            prop_assert_eq!(s.rem_euclid(advance), 0);
        }
        // and no window of that grid holding ts is missing
        let expected = (0..).map(|i| ts - ts.rem_euclid(advance) - i * advance)
            .take_while(|s| *s > ts - size).count();
        prop_assert_eq!(ws.len(), expected);
    }

    #[test]
    fn window_keys_sort_by_end(a in any::<i64>(), b in any::<i64>(), ka in proptest::collection::vec(any::<u8>(), 0..6), kb in proptest::collection::vec(any::<u8>(), 0..6)) {
        prop_assume!(a != b);
        prop_assert_eq!(a < b, window_key(a, &ka) < window_key(b, &kb));
        let k = window_key(a, &ka);
        prop_assert_eq!(split_window_key(&k), Some((a, ka.as_slice())));
        let (lo, hi) = window_range(b);
        prop_assert_eq!(k >= lo && k < hi, a < b);
    }

    #[test]
    fn the_watermark_never_goes_back(events in proptest::collection::vec((0i32..3, -1000i64..1000, 0u64..30), 1..60)) {
        let t0 = Instant::now();
        let mut wm = Watermarks::new([0, 1, 2], Duration::from_secs(10), t0);
        let mut last = NO_WATERMARK;
        for (input, w, secs) in events {
            let now = t0 + Duration::from_secs(secs);
            wm.observe(input, w, now);
            wm.advance(now);
            prop_assert!(wm.current() >= last);
            last = wm.current();
        }
    }
}

#[test]
fn a_source_task_that_is_behind_keeps_sending_markers() {
    let et = EventTime {
        field: Some("ts".into()),
        format: TimeFormat::UnixMs,
        max_out_of_orderness: Duration::from_millis(1000),
        idle_timeout: Duration::from_secs(10),
    };
    // the watermark moved: due, caught up or not
    assert_eq!(marker_due(&et, 5_000, 3_000, false, false), Some(3_999));
    // nothing moved, nothing read since, nothing left to read: none (the input may go idle)
    assert_eq!(marker_due(&et, 5_000, 3_999, false, false), None);
    // nothing moved, but records wait in its partition: due, so it is not taken for idle
    assert_eq!(marker_due(&et, 5_000, 3_999, false, true), Some(3_999));
    // behind before reading anything: a marker without a watermark
    assert_eq!(
        marker_due(&et, NO_WATERMARK, NO_WATERMARK, false, true),
        Some(NO_WATERMARK)
    );
    assert_eq!(
        marker_due(&et, NO_WATERMARK, NO_WATERMARK, true, false),
        None
    );
}

#[test]
fn a_marker_without_a_watermark_keeps_its_input_from_idling() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let mut w = Watermarks::new([0, 1], idle, t0);
    w.observe(0, 1_000, t0);
    w.observe(1, 500, t0);
    assert_eq!(w.advance(t0), Some(500));
    // input 1 stalls behind; its source task's markers say so every checkpoint
    for s in 1..=30 {
        let now = t0 + Duration::from_secs(s);
        w.observe(0, 1_000 + 1_000 * i64::try_from(s).unwrap_or(0), now);
        w.observe(1, NO_WATERMARK, now);
        assert_eq!(w.advance(now), None, "input 1 was taken for idle at {s} s");
    }
    assert_eq!(w.current(), 500);
}

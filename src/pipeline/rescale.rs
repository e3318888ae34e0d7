//! Where each state key of a keyed operator goes when a savepoint is restored into another
//! partition count, free of I/O. A key's state follows its record key (Kafka's murmur2
//! partitioner, as the repartition topic places records), so every layout says which record
//! key a state key belongs to:
//!
//! - plain aggregates: the state key is the record key;
//! - windows (`pipeline::window`): `0 ‖ end ‖ key`, and sessions' index `3 ‖ len ‖ key ‖ start`;
//! - timers (`pipeline::timers`: dedupe, TTL, custom operators): `0 ‖ key`, `1|2 ‖ t ‖ key`;
//! - stream joins (`pipeline::stream_join`): entries `4|5 ‖ len ‖ key ‖ …`, their time index
//!   `1 ‖ t ‖ entry` and match marks `6 ‖ entry`.
//!
//! What belongs to a task rather than a key — its persisted watermarks, a stream join's
//! highest event time of the other stream — goes to every new task, merged by the minimum:
//! a lower watermark only holds windows open longer, it never makes a record late. A table
//! join cannot move: its rows are tied to the offsets of the table partition they were read
//! from.

use crate::config::Aggregate;
use crate::pipeline::{stream_join, timers, window};

/// How an operator's state keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    Windows,
    Timers,
    StreamJoin,
}

/// Where one state key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// With the state of this record key.
    Key(&'a [u8]),
    /// To every task, an `i64` merged by the minimum.
    EveryTask,
}

/// The layout of `agg`'s state; `Err`: why it cannot move to another partition count.
pub fn layout(agg: &Aggregate) -> Result<Layout, &'static str> {
    use crate::config::AggregateKind as K;
    Ok(match &agg.kind {
        K::Join { .. } => {
            return Err("a table join's rows belong to the table partition they were read from");
        }
        K::StreamJoin { .. } => Layout::StreamJoin,
        _ if agg.window.is_some() => Layout::Windows,
        K::Dedupe { .. } | K::Custom { .. } => Layout::Timers,
        _ if agg.ttl_ms.is_some() => Layout::Timers,
        _ => Layout::Plain,
    })
}

/// The route of state key `k` (inside the operator's namespace); `None`: a key this layout
/// does not know, which a restore must refuse rather than misplace.
pub fn route(layout: Layout, k: &[u8]) -> Option<Route<'_>> {
    let (lo, hi) = window::Watermarks::entry_range();
    if layout != Layout::Plain && k >= lo.as_slice() && k < hi.as_slice() {
        return Some(Route::EveryTask);
    }
    match layout {
        Layout::Plain => Some(Route::Key(k)),
        Layout::Windows => window::split_window_key(k)
            .map(|(_, key)| key)
            .or_else(|| window::session::key_of_index_key(k))
            .map(Route::Key),
        Layout::Timers => match k.split_first()? {
            (0, key) => Some(Route::Key(key)),
            _ => timers::split_timer_key(k).map(|(_, key)| Route::Key(key)),
        },
        Layout::StreamJoin => {
            if k == stream_join::max_key(stream_join::Side::Other) {
                return Some(Route::EveryTask);
            }
            let entry = match k.split_first()? {
                (4 | 5, _) => k,
                (1, _) => timers::split_timer_key(k)?.1,
                _ => stream_join::entry_of_matched_key(k)?,
            };
            stream_join::entry_parts(entry).map(|(_, key)| Route::Key(key))
        }
    }
}

/// Two values of an [`Route::EveryTask`] key merged (the lower `i64`); `None` when either is
/// not one.
pub fn merge(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let a = i64::from_be_bytes(a.try_into().ok()?);
    let b = i64::from_be_bytes(b.try_into().ok()?);
    Some(a.min(b).to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stream_join::Side;
    use crate::pipeline::window::session;

    #[test]
    fn every_layout_finds_the_record_key_of_its_state_keys() {
        let k = b"user-17".as_slice();
        assert_eq!(route(Layout::Plain, k), Some(Route::Key(k)));
        for wk in [window::window_key(-5, k), session::index_key(k, 1_000)] {
            assert_eq!(route(Layout::Windows, &wk), Some(Route::Key(k)), "{wk:?}");
        }
        for tk in [
            timers::value_key(k),
            timers::timer_key(99, k),
            timers::event_timer_key(-99, k),
        ] {
            assert_eq!(route(Layout::Timers, &tk), Some(Route::Key(k)), "{tk:?}");
        }
        let entry = stream_join::entry_key(Side::Other, k, 42, 3, 7);
        for jk in [
            entry.clone(),
            timers::timer_key(42, &entry),
            stream_join::matched_key(&entry),
        ] {
            assert_eq!(
                route(Layout::StreamJoin, &jk),
                Some(Route::Key(k)),
                "{jk:?}"
            );
        }
        assert_eq!(
            route(Layout::StreamJoin, &stream_join::max_key(Side::Other)),
            Some(Route::EveryTask)
        );
    }

    #[test]
    fn watermarks_go_to_every_task_at_their_minimum() {
        let mut w = window::Watermarks::new([0, 1]);
        w.observe(0, 500, false);
        for (key, _) in w.to_entries() {
            for layout in [Layout::Windows, Layout::Timers, Layout::StreamJoin] {
                assert_eq!(route(layout, &key), Some(Route::EveryTask), "{key:?}");
            }
        }
        assert_eq!(
            merge(&7i64.to_be_bytes(), &(-3i64).to_be_bytes()),
            Some((-3i64).to_be_bytes().to_vec())
        );
        assert_eq!(merge(b"x", &1i64.to_be_bytes()), None);
    }

    #[test]
    fn each_operator_has_its_layout_and_a_table_join_none() {
        let layout_of = |ops: &str, source_extra: &str| {
            let text = format!(
                "[kafka]\nbootstrap_servers = \"k:9092\"\n[checkpoint]\ninterval = \"1s\"\ndir = \"c\"\n\
                 [[pipelines]]\nname = \"p\"\nsource = {{ topic = \"in\"{source_extra} }}\n\
                 sink = {{ topic = \"out\" }}\noperators = [{{ type = \"key_by\", field = \"u\" }}, {ops}]\n"
            );
            let c = crate::config::from_str(&text).unwrap();
            layout(c.pipelines[0].plan.aggregate.as_ref().unwrap())
        };
        let et = ", event_time = { field = \"ts\" }";
        assert_eq!(layout_of("{ type = \"count\" }", ""), Ok(Layout::Plain));
        assert_eq!(
            layout_of("{ type = \"count\", ttl = \"1h\" }", ""),
            Ok(Layout::Timers)
        );
        assert_eq!(
            layout_of("{ type = \"dedupe\", ttl = \"1h\" }", ""),
            Ok(Layout::Timers)
        );
        assert_eq!(
            layout_of(
                "{ type = \"count\", window = { type = \"tumbling\", size = \"1m\" } }",
                et
            ),
            Ok(Layout::Windows)
        );
        assert_eq!(
            layout_of(
                "{ type = \"join\", stream = \"s\", within = \"1m\", into = \"x\" }",
                et
            ),
            Ok(Layout::StreamJoin)
        );
        assert!(layout_of("{ type = \"join\", table = \"t\", into = \"x\" }", "").is_err());
    }

    #[test]
    fn unknown_keys_are_not_guessed() {
        assert_eq!(route(Layout::Windows, &[7, 1, 2]), None);
        assert_eq!(route(Layout::Timers, &[5]), None);
        assert_eq!(route(Layout::StreamJoin, &[4, 0, 0, 0, 9, 1]), None);
        assert_eq!(route(Layout::Timers, &[]), None);
    }
}

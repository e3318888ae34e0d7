//! A stream-table join (enrichment) against a reference computed here: the table topic read
//! into keyed state, the stream re-keyed to meet it, through 5 SIGKILLs: every event exactly
//! once with its row (or null: no row, or a deleted one); later table updates reach later events.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

/// Panics unless every expected output (pair, or lone record as -1) is out exactly once and
/// nothing else is, naming a few differences and with the daemon's logs.
fn assert_once_each(
    got: &BTreeMap<(i64, i64), u32>,
    expected: &std::collections::BTreeSet<(i64, i64)>,
    daemon: &common::Daemon,
) {
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "out more than once: {twice:?}\n{}",
        daemon.all_logs()
    );
    let seen: std::collections::BTreeSet<(i64, i64)> = got.keys().copied().collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    let extra: Vec<_> = seen.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} out, expected {}; missing {missing:?}, extra {extra:?}\n{}",
        seen.len(),
        expected.len(),
        daemon.all_logs()
    );
}

/// id → (user, profile) of each event read back; panics on an event out twice.
fn events_in(output: &[common::Read]) -> BTreeMap<u64, (String, Value)> {
    let mut out = BTreeMap::new();
    for r in output {
        let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        let id = v["id"].as_u64().unwrap();
        let user = v["user"].as_str().unwrap().to_string();
        assert_eq!(
            r.key.as_deref(),
            Some(user.as_str()),
            "keyed by the join key"
        );
        assert!(
            out.insert(id, (user, v["profile"].clone())).is_none(),
            "event {id} out twice"
        );
    }
    out
}

#[test]
fn stream_table_join_is_exact_through_sigkills_and_follows_table_updates() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("join");
    let (table, source, sink) = (
        format!("{name}-profiles"),
        format!("{name}-in"),
        format!("{name}-out"),
    );
    for t in [&table, &source, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    // the table: 200 rows keyed by user, the last one deleted again (a tombstone)
    let mut rows: BTreeMap<String, Value> = BTreeMap::new();
    let mut table_records = Vec::new();
    for i in 0..200 {
        let (user, row) = (
            format!("u{i}"),
            json!({"name": format!("User {i}"), "tier": format!("t{}", i % 3)}),
        );
        table_records.push((None, user.clone(), row.to_string()));
        rows.insert(user, row);
    }
    common::produce_all(&bootstrap, &table, &table_records);
    common::tombstone(&bootstrap, &table, "u199");
    rows.remove("u199");

    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", table = "{table}", into = "profile", mode = "left" }},
]
"#
        );
    // 20,000 events over 210 users (200..209 and the deleted u199 have no row), randomly keyed
    let mut rng = rand::rng();
    let events: Vec<(Option<i32>, String, String)> = (0..20_000u64)
        .map(|id| {
            let user = format!("u{}", rng.random_range(0..210));
            (
                None,
                format!("k{}", rng.random_range(0..1_000_000)),
                format!(r#"{{"user":"{user}","id":{id}}}"#),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let feeder = {
        let (bootstrap, source, events) = (bootstrap.clone(), source.clone(), events.clone());
        std::thread::spawn(move || {
            for chunk in events.chunks(1_000) {
                common::produce_all(&bootstrap, &source, chunk);
                std::thread::sleep(Duration::from_millis(600));
            }
        })
    };
    daemon.kill_randomly(5, 1_000..2_500);
    feeder.join().unwrap();
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        events.len(),
        Duration::from_secs(120),
    );
    let got = events_in(&output);
    assert_eq!(got.len(), events.len(), "{}", daemon.all_logs());
    for (id, (user, profile)) in &got {
        let want = rows.get(user).cloned().unwrap_or(Value::Null);
        assert_eq!(
            profile,
            &want,
            "event {id} of {user}\n{}",
            daemon.all_logs()
        );
    }

    // table updates reach the events that come after them
    let upgrades: Vec<_> = (0..10)
        .map(|i| {
            (
                None,
                format!("u{i}"),
                json!({"name": format!("User {i}"), "tier": "platinum"}).to_string(),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &table, &upgrades);
    std::thread::sleep(Duration::from_secs(3));
    let later: Vec<_> = (0..100u64)
        .map(|n| {
            (
                None,
                format!("later{n}"),
                format!(r#"{{"user":"u{}","id":{}}}"#, n % 10, 100_000 + n),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &source, &later);
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            events.len() + 100,
            Duration::from_secs(30),
        );
        let got = events_in(&output);
        if got.len() >= events.len() + 100 || Instant::now() > deadline {
            break got;
        }
    };
    for n in 0..100u64 {
        let (_, profile) = &got[&(100_000 + n)];
        assert_eq!(
            profile["tier"],
            "platinum",
            "event {} after the update\n{}",
            100_000 + n,
            daemon.all_logs()
        );
    }
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// A windowed stream-stream join (orders re-keyed by user, payments keyed by user, within
/// 1 s of event time, out of order up to 0.5 s), through 5 SIGKILLs: every pair exactly once.
#[test]
fn stream_stream_join_emits_every_pair_once_through_sigkills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("sjoin");
    let (orders, payments, sink) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
    );
    for t in [&orders, &payments, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "2s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment" }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let mut rng = rand::rng();
    let mut order_recs = Vec::new();
    let mut pay_recs = Vec::new();
    let mut order_rows = Vec::new();
    let mut pay_rows = Vec::new();
    for i in 0..3_000i64 {
        let (user, ts) = (
            format!("u{}", rng.random_range(0..40)),
            base + i * 5 - rng.random_range(0..500),
        );
        order_recs.push((
            None,
            format!("o{i}"),
            json!({"order": i, "user": user, "ts": ts}).to_string(),
        ));
        order_rows.push((i, user, ts));
        let (user, ts) = (
            format!("u{}", rng.random_range(0..40)),
            base + i * 5 - rng.random_range(0..500),
        );
        // keyed by user, as the join needs
        pay_recs.push((
            None,
            user.clone(),
            json!({"payment": i, "user": user, "ts": ts}).to_string(),
        ));
        pay_rows.push((i, user, ts));
    }
    let mut expected = std::collections::BTreeSet::new();
    for (o, ou, ot) in &order_rows {
        for (p, pu, pt) in &pay_rows {
            if ou == pu && (ot - pt).abs() <= 1_000 {
                expected.insert((*o, *p));
            }
        }
    }
    assert!(
        expected.len() > 3_000,
        "a weak test input: {} pairs",
        expected.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let feeder = {
        let (bootstrap, orders, payments) = (bootstrap.clone(), orders.clone(), payments.clone());
        let (order_recs, pay_recs) = (order_recs.clone(), pay_recs.clone());
        std::thread::spawn(move || {
            for (o, p) in order_recs.chunks(200).zip(pay_recs.chunks(200)) {
                common::produce_all(&bootstrap, &orders, o);
                common::produce_all(&bootstrap, &payments, p);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    daemon.kill_randomly(5, 700..1_500);
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            expected.len(),
            Duration::from_secs(30),
        );
        let mut got = std::collections::BTreeMap::new();
        for r in &output {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let pair = (
                v["order"].as_i64().unwrap(),
                v["payment"]["payment"].as_i64().unwrap(),
            );
            assert_eq!(v["user"], v["payment"]["user"], "{v}");
            *got.entry(pair).or_insert(0u32) += 1;
        }
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_once_each(&got, &expected, &daemon);
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// An outer stream-stream join (orders re-keyed by user, payments keyed by user, within 1 s),
/// through 5 SIGKILLs: every pair once, every order without a payment once with `payment`
/// null, every payment without an order once alone, and nothing else; the unmatched ones only
/// after a last record on every partition of both streams has moved the watermark past them.
#[test]
fn an_outer_stream_join_sends_every_pair_and_every_unmatched_record_once_through_sigkills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("ojoin");
    let (orders, payments, sink) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
    );
    for t in [&orders, &payments, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "2s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment", mode = "outer" }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let mut rng = rand::rng();
    let (mut order_recs, mut pay_recs) = (Vec::new(), Vec::new());
    let (mut order_rows, mut pay_rows) = (Vec::new(), Vec::new());
    // 300 users: about a third of the records find no partner within 1 s
    for i in 0..2_000i64 {
        let (user, ts) = (
            format!("u{}", rng.random_range(0..300)),
            base + i * 5 - rng.random_range(0..500),
        );
        order_recs.push((
            None,
            format!("o{i}"),
            json!({"order": i, "user": user, "ts": ts}).to_string(),
        ));
        order_rows.push((i, user, ts));
        let (user, ts) = (
            format!("u{}", rng.random_range(0..300)),
            base + i * 5 - rng.random_range(0..500),
        );
        pay_recs.push((
            None,
            user.clone(),
            json!({"payment": i, "user": user, "ts": ts}).to_string(),
        ));
        pay_rows.push((i, user, ts));
    }
    // what must come out: (order, payment) pairs, unmatched orders (o, -1), payments (-1, p)
    let mut expected = std::collections::BTreeSet::new();
    for (o, ou, ot) in &order_rows {
        for (p, pu, pt) in &pay_rows {
            if ou == pu && (ot - pt).abs() <= 1_000 {
                expected.insert((*o, *p));
            }
        }
    }
    let paired_orders: std::collections::BTreeSet<i64> = expected.iter().map(|e| e.0).collect();
    let paid: std::collections::BTreeSet<i64> = expected.iter().map(|e| e.1).collect();
    let lone_orders = (0..2_000).filter(|o| !paired_orders.contains(o)).count();
    let lone_payments = (0..2_000).filter(|p| !paid.contains(p)).count();
    expected.extend(
        (0..2_000)
            .filter(|o| !paired_orders.contains(o))
            .map(|o| (o, -1)),
    );
    expected.extend((0..2_000).filter(|p| !paid.contains(p)).map(|p| (-1, p)));
    assert!(
        lone_orders > 200
            && lone_payments > 200
            && expected.len() > lone_orders + lone_payments + 1_000,
        "a weak test input: {lone_orders} lone orders, {lone_payments} lone payments, {} in all",
        expected.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let feeder = {
        let (bootstrap, orders, payments) = (bootstrap.clone(), orders.clone(), payments.clone());
        let (order_recs, pay_recs) = (order_recs.clone(), pay_recs.clone());
        std::thread::spawn(move || {
            for (o, p) in order_recs.chunks(200).zip(pay_recs.chunks(200)) {
                common::produce_all(&bootstrap, &orders, o);
                common::produce_all(&bootstrap, &payments, p);
                std::thread::sleep(Duration::from_millis(300));
            }
            // a last record per partition of both streams, far later and of users of their
            // own: the watermark passes every record above
            let late = base + 600_000;
            for p in 0..4 {
                let order = json!({"order": 100_000 + p, "user": format!("zz-o{p}"), "ts": late});
                let pay = json!({"payment": 100_000 + p, "user": format!("zz-p{p}"), "ts": late});
                common::produce_all(
                    &bootstrap,
                    &orders,
                    &[(Some(p), format!("zo{p}"), order.to_string())],
                );
                common::produce_all(
                    &bootstrap,
                    &payments,
                    &[(Some(p), format!("zz-p{p}"), pay.to_string())],
                );
            }
        })
    };
    daemon.kill_randomly(5, 700..1_500);
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            expected.len(),
            Duration::from_secs(30),
        );
        let mut got = std::collections::BTreeMap::new();
        for r in &output {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let order = v.get("order").map_or(-1, |o| o.as_i64().unwrap());
            let payment = match &v["payment"] {
                Value::Null => -1,
                p => {
                    assert_eq!(r.key.as_deref(), p["user"].as_str(), "keyed by user: {v}");
                    p["payment"].as_i64().unwrap()
                }
            };
            if order >= 0 && payment >= 0 {
                assert_eq!(v["user"], v["payment"]["user"], "{v}");
            }
            *got.entry((order, payment)).or_insert(0u32) += 1;
        }
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_once_each(&got, &expected, &daemon);
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// A left stream-stream join whose other stream is silent on half its partitions: after the
/// idle timeout those partitions hold nothing back, so every order without a payment comes out
/// once with `payment` null, every pair once, and no payment alone (left, not outer).
#[test]
fn a_left_stream_join_sends_unmatched_orders_once_even_where_the_other_stream_is_idle() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("ljoin");
    let (orders, payments, sink) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
    );
    for t in [&orders, &payments, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "1s", idle_timeout = "2s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment", mode = "left" }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let partition_of =
        |user: &str| flumen::checkpoint::savepoint::kafka_partition(user.as_bytes(), 4);
    let users: Vec<String> = (0..40).map(|u| format!("u{u}")).collect();
    let (mut order_recs, mut pay_recs, mut expected) =
        (Vec::new(), Vec::new(), std::collections::BTreeSet::new());
    for i in 0..400i64 {
        let user = &users[i as usize % users.len()];
        let ts = base + i * 50;
        order_recs.push((
            None,
            format!("o{i}"),
            json!({"order": i, "user": user, "ts": ts}).to_string(),
        ));
        // payments only for users of partitions 0 and 1: partitions 2 and 3 stay silent
        if partition_of(user) < 2 {
            if i % 3 == 0 {
                // paid 0.5 s later: a pair
                pay_recs.push((
                    None,
                    user.clone(),
                    json!({"payment": i, "user": user, "ts": ts + 500}).to_string(),
                ));
                expected.insert((i, i));
            } else if i % 3 == 1 {
                // a payment an hour later: no pair, and (left join) never out alone
                pay_recs.push((
                    None,
                    user.clone(),
                    json!({"payment": i, "user": user, "ts": ts + 3_600_000}).to_string(),
                ));
                expected.insert((i, -1));
            } else {
                expected.insert((i, -1));
            }
        } else {
            expected.insert((i, -1));
        }
    }
    common::produce_all(&bootstrap, &orders, &order_recs);
    common::produce_all(&bootstrap, &payments, &pay_recs);
    // the orders' watermark far past everything, on every partition
    let late = base + 100_000_000;
    let flush: Vec<_> = (0..4)
        .map(|p| {
            (
                Some(p),
                format!("zo{p}"),
                json!({"order": 100_000 + p, "user": format!("zz-o{p}"), "ts": late}).to_string(),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &orders, &flush);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let deadline = Instant::now() + Duration::from_secs(90);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            expected.len(),
            Duration::from_secs(20),
        );
        let mut got = std::collections::BTreeMap::new();
        for r in &output {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let order = v.get("order").map_or(-1, |o| o.as_i64().unwrap());
            let payment = match &v["payment"] {
                Value::Null => -1,
                p => p["payment"].as_i64().unwrap(),
            };
            *got.entry((order, payment)).or_insert(0u32) += 1;
        }
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_once_each(&got, &expected, &daemon);
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// A savepoint of a stream join keeps the other stream's offsets: orders are buffered, a
/// savepoint taken, then their payments processed; restoring that savepoint (into a second
/// sink) reads the payments again and sends every pair again, exactly once there.
#[test]
fn restoring_a_stream_join_savepoint_rereads_the_other_stream_from_it() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("spjoin");
    let (orders, payments, sink, sink2) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
        format!("{name}-out2"),
    );
    for t in [&orders, &payments, &sink, &sink2] {
        common::create_topic(&bootstrap, t, 2);
    }
    let config = |sink: &str| {
        common::engine_header(&bootstrap, "rocksdb")
            + &format!(
                r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "1s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1m", into = "payment" }},
]
"#
            )
    };
    let base = 1_700_000_000_000i64;
    let order_recs: Vec<_> = (0..100i64)
        .map(|i| {
            (
                None,
                format!("o{i}"),
                json!({"order": i, "user": format!("u{}", i % 10), "ts": base + i}).to_string(),
            )
        })
        .collect();
    let pay_recs: Vec<_> = (0..100i64)
        .map(|i| {
            let user = format!("u{}", i % 10);
            (
                None,
                user.clone(),
                json!({"payment": i, "user": user, "ts": base + 100 + i}).to_string(),
            )
        })
        .collect();
    // every order pairs with every payment of its user (all within a minute)
    let expected: std::collections::BTreeSet<(i64, i64)> = (0..100i64)
        .flat_map(|o| {
            (0..100i64)
                .filter(move |p| p % 10 == o % 10)
                .map(move |p| (o, p))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config(&sink));
    daemon.start();
    common::produce_all(&bootstrap, &orders, &order_recs);
    // half the payments before the savepoint: it must record how far the other stream was read
    common::produce_all(&bootstrap, &payments, &pay_recs[..50]);
    // the orders are in (buffered) once the group has committed all of them
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    let sp = loop {
        std::thread::sleep(Duration::from_secs(2));
        attempt += 1;
        let taken = daemon.savepoint(Some(&dir.path().join(format!("sp-{attempt}"))), false);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(taken[0].join("_savepoint.json")).unwrap())
                .unwrap();
        let read = |offsets: &Value| -> i64 {
            offsets
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["next_offset"].as_i64().unwrap_or(0))
                .sum()
        };
        let read = (
            read(&manifest["offsets"]),
            read(&manifest["other_stream"]["offsets"]),
        );
        if read == (100, 50) || Instant::now() > deadline {
            assert_eq!(read, (100, 50), "{manifest}");
            break taken[0].clone();
        }
    };
    let shown = common::flumen(&["savepoint", "inspect", &sp.display().to_string()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("joined      {payments}")),
        "inspect shows the other stream's offsets: {shown}"
    );
    common::produce_all(&bootstrap, &payments, &pay_recs[50..]);
    let pairs = |topic: &str, want: usize| {
        let mut got = std::collections::BTreeMap::new();
        for r in common::read_all(
            &bootstrap,
            topic,
            "read_committed",
            want,
            Duration::from_secs(60),
        ) {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let pair = (
                v["order"].as_i64().unwrap(),
                v["payment"]["payment"].as_i64().unwrap(),
            );
            *got.entry(pair).or_insert(0u32) += 1;
        }
        got
    };
    let first = pairs(&sink, expected.len());
    assert_eq!(
        first
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "{}",
        daemon.all_logs()
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );

    std::fs::write(
        &daemon.config,
        config(&sink2).replace("{DIR}", &dir.path().display().to_string()),
    )
    .unwrap();
    daemon.args = vec!["--from-savepoint".into(), sp.display().to_string()];
    daemon.start();
    // the restore re-reads the payments from where the savepoint had read them: only the
    // pairs of the later half are made again
    let later: std::collections::BTreeSet<(i64, i64)> =
        expected.iter().copied().filter(|(_, p)| *p >= 50).collect();
    let second = pairs(&sink2, later.len());
    assert_eq!(
        second
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        later,
        "{}",
        daemon.all_logs()
    );
    assert!(
        second.values().all(|n| *n == 1),
        "a pair out twice after the restore"
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// An unmatched record of a left join whose output an `after` step refuses follows the error
/// policy like an input record: under `dead_letter` it goes to the dead-letter topic once (the
/// buffered record, with where it was read), and the pairs go out as usual.
#[test]
fn an_unmatched_join_record_that_cannot_be_written_is_dead_lettered() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("djoin");
    let (orders, payments, sink, dlq) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    for t in [&orders, &payments, &sink] {
        common::create_topic(&bootstrap, t, 2);
    }
    common::create_topic(&bootstrap, &dlq, 1);
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "1s", idle_timeout = "2s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment", mode = "left" }},
  {{ type = "map", expr = 'if .payment == null then error("an order without payment") else . end' }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let order_recs: Vec<_> = (0..10i64)
        .map(|i| {
            (
                None,
                format!("o{i}"),
                json!({"order": i, "user": format!("u{i}"), "ts": base + i}).to_string(),
            )
        })
        .collect();
    // even orders are paid
    let pay_recs: Vec<_> = (0..10i64)
        .filter(|i| i % 2 == 0)
        .map(|i| {
            (
                None,
                format!("u{i}"),
                json!({"payment": i, "user": format!("u{i}"), "ts": base + i + 10}).to_string(),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &orders, &order_recs);
    common::produce_all(&bootstrap, &payments, &pay_recs);
    let flush: Vec<_> = (0..2)
        .map(|p| {
            (
                Some(p),
                format!("zo{p}"),
                json!({"order": 100 + p, "user": format!("zz{p}"), "ts": base + 10_000_000})
                    .to_string(),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &orders, &flush);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let letters = common::dead_letters(&bootstrap, &dlq, 5);
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        5,
        Duration::from_secs(30),
    );
    let paired: std::collections::BTreeSet<i64> = out
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r.value.as_deref().unwrap()).unwrap()["order"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        paired,
        [0, 2, 4, 6, 8].into_iter().collect(),
        "{}",
        daemon.all_logs()
    );
    assert_eq!(out.len(), 5);
    let mut lone: Vec<i64> = letters
        .iter()
        .map(|(v, _)| {
            serde_json::from_slice::<Value>(v).unwrap()["order"]
                .as_i64()
                .unwrap()
        })
        .collect();
    lone.sort_unstable();
    assert_eq!(lone, vec![1, 3, 5, 7, 9], "{}", daemon.all_logs());
    for (_, h) in &letters {
        assert_eq!(h["flumen.error.stage"], "stream_join");
        assert!(
            h["flumen.error.message"].contains("an order without payment"),
            "{h:?}"
        );
        assert!(h["flumen.source.topic"].ends_with("-repartition"), "{h:?}");
        assert!(
            h["flumen.source.offset"].parse::<i64>().unwrap() >= 0,
            "{h:?}"
        );
    }
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

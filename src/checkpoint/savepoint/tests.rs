use super::*;

fn head(pipeline: &str) -> SavepointManifest {
    SavepointManifest {
        format_version: FORMAT_VERSION,
        flumen_version: "test".into(),
        pipeline: pipeline.into(),
        created_unix_ms: 1,
        checkpoint: CheckpointId(7),
        source_topic: "events".into(),
        source_partitions: 2,
        offsets: vec![
            SourceOffset {
                partition: 0,
                next_offset: Some(NextOffset(10)),
            },
            SourceOffset {
                partition: 1,
                next_offset: None,
            },
        ],
        state_partitions: 2,
        operators: vec![
            OperatorState {
                id: "count".into(),
                kind: "count".into(),
                files: vec![],
            },
            OperatorState {
                id: "empty".into(),
                kind: "sum".into(),
                files: vec![],
            },
        ],
        pending: vec![],
        other_stream: None,
    }
}

fn keyed(key: &[u8], value: &[u8]) -> PendingRecord {
    PendingRecord {
        key: Some(key.to_vec()),
        value: value.to_vec(),
        headers: vec![
            ("flumen.event_time".into(), b"1700000000123".to_vec()),
            ("flumen.watermark".into(), b"0:1700000000000".to_vec()),
        ],
    }
}

fn build(dir: &Path) -> SavepointManifest {
    let mut b = Builder::begin(dir).unwrap();
    b.put_state("count", 0, b"u1", &1u64.to_be_bytes()).unwrap();
    b.put_state("count", 0, b"u3", &3u64.to_be_bytes()).unwrap();
    b.put_state("count", 1, b"u2", &2u64.to_be_bytes()).unwrap();
    b.put_pending(1, &keyed(b"u2", br#"{"user":"u2"}"#))
        .unwrap();
    b.put_pending(
        2,
        &PendingRecord {
            key: None,
            value: Vec::new(),
            headers: vec![("flumen.watermark".into(), b"3:1700000000000".to_vec())],
        },
    )
    .unwrap();
    b.finish(head("p")).unwrap()
}

#[test]
fn a_savepoint_reads_back_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    let written = build(&dir);
    let sp = Savepoint::open(&dir, None).unwrap();
    assert_eq!(sp.manifest, written);
    assert_eq!(sp.manifest.keys(), 3);
    sp.verify().unwrap();
    let mut state = Vec::new();
    sp.read_state("count", |p, k, v| {
        state.push((p, k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        state,
        vec![
            (0, b"u1".to_vec(), 1u64.to_be_bytes().to_vec()),
            (0, b"u3".to_vec(), 3u64.to_be_bytes().to_vec()),
            (1, b"u2".to_vec(), 2u64.to_be_bytes().to_vec()),
        ]
    );
    let mut pending = Vec::new();
    sp.read_pending(|p, r| {
        pending.push((p, r));
        Ok(())
    })
    .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0], (1, keyed(b"u2", br#"{"user":"u2"}"#)));
    assert_eq!(
        pending[1].1.key, None,
        "a marker has no key, and keeps none"
    );
    assert_eq!(pending[1].1.headers[0].1, b"3:1700000000000");
    // an operator without keys is still declared, so restore can match it
    assert!(sp.manifest.operators.iter().any(|o| o.id == "empty"));
    // no staging directory is left behind
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("sp")]);
}

#[test]
fn a_savepoint_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    build(&dir);
    assert!(matches!(Builder::begin(&dir), Err(Error::Exists(_))));
}

#[test]
fn a_flipped_byte_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    build(&dir);
    let file = dir.join("state/count/0.kv");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let err = Savepoint::open(&dir, None).unwrap().verify().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("state/count/0.kv") && text.contains("crc32c"),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    build(&dir);
    std::fs::remove_file(dir.join("pending/1.kv")).unwrap();
    let text = Savepoint::open(&dir, None)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(text.contains("pending/1.kv"), "{text}");
}

#[test]
fn a_directory_without_manifest_or_of_another_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        Savepoint::open(tmp.path(), None),
        Err(Error::NotASavepoint(_))
    ));
    let dir = tmp.path().join("sp");
    build(&dir);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("\"format_version\": {FORMAT_VERSION}"),
        "\"format_version\": 99",
    );
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        Savepoint::open(&dir, None),
        Err(Error::Version { found: 99, .. })
    ));
}

#[test]
fn open_finds_the_pipeline_subdirectory_and_list_finds_both_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    build(&tmp.path().join("stop").join("p"));
    build(&tmp.path().join("single"));
    let sp = Savepoint::open(&tmp.path().join("stop"), Some("p")).unwrap();
    assert!(sp.dir.ends_with("stop/p"));
    let listed: Vec<_> = list(tmp.path()).into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    delete(&sp.dir).unwrap();
    assert!(matches!(delete(&sp.dir), Err(Error::NotASavepoint(_))));
}

/// Vectors from Apache Kafka's `UtilsTest.testMurmur2`.
#[test]
fn murmur2_matches_kafka() {
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (key, expected) in cases {
        assert_eq!(
            murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32,
            expected,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    // toPositive(hash) % n
    let h = (-973_932_308i32) & 0x7fff_ffff;
    assert_eq!(kafka_partition(b"21", 8), h % 8);
}

#[test]
fn state_keeps_its_partition_unless_the_count_changes() {
    assert_eq!(target_partition(3, b"anything", 4, 4), 3);
    for key in [b"u1".as_slice(), b"u2", b"", b"a-longer-key"] {
        let p = target_partition(0, key, 4, 8);
        assert_eq!(p, kafka_partition(key, 8));
        assert!((0..8).contains(&p));
    }
}

#[test]
fn format_1_pending_records_are_read_as_keyed_payloads_without_headers() {
    assert_eq!(
        PendingRecord::decode(1, b"u1", b"{}"),
        Some(PendingRecord {
            key: Some(b"u1".to_vec()),
            value: b"{}".to_vec(),
            headers: Vec::new(),
        })
    );
    let r = keyed(b"k", b"v");
    let bytes = r.encode();
    assert_eq!(PendingRecord::decode(2, b"k", &bytes), Some(r));
    assert_eq!(
        PendingRecord::decode(2, b"k", &bytes[..7]),
        None,
        "cut short"
    );
}

/// A savepoint of format 1 on disk (pending values are the payload alone, always keyed, no
/// `other_stream`) is opened, verified and read.
#[test]
fn a_format_1_savepoint_directory_still_opens_and_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    let mut manifest = build(&dir);
    // rewrite it as Flumen 0.1 wrote it: the pending file with bare payloads, version 1
    let file = dir.join("pending/1.kv");
    std::fs::remove_file(&file).unwrap();
    let mut w = kvfile::Writer::create(&file).unwrap();
    w.put(b"u2", br#"{"user":"u2"}"#).unwrap();
    let (entries, len) = w.finish().unwrap();
    manifest.pending.retain(|f| f.partition == 1);
    std::fs::remove_file(dir.join("pending/2.kv")).unwrap();
    let entry = &mut manifest.pending[0];
    (entry.entries, entry.len, entry.crc32c) = (entries, len, crc_of(&file).unwrap());
    manifest.format_version = 1;
    let mut json = serde_json::to_value(&manifest).unwrap();
    json.as_object_mut().unwrap().remove("other_stream");
    std::fs::write(
        dir.join(MANIFEST),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();

    let sp = Savepoint::open(&dir, None).unwrap();
    assert_eq!(sp.manifest.format_version, 1);
    sp.verify().unwrap();
    let mut pending = Vec::new();
    sp.read_pending(|p, r| {
        pending.push((p, r));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        pending,
        vec![(
            1,
            PendingRecord {
                key: Some(b"u2".to_vec()),
                value: br#"{"user":"u2"}"#.to_vec(),
                headers: Vec::new(),
            }
        )]
    );
}

/// A savepoint's manifest carries its own checksum (format 3): a flipped bit anywhere in it is
/// refused at open, before its offsets or checksums are believed.
#[test]
fn a_flipped_bit_in_the_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sp");
    build(&dir);
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).unwrap();
    Savepoint::open(&dir, None).unwrap();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 1 << (i % 8);
        std::fs::write(&path, &damaged).unwrap();
        let opened = Savepoint::open(&dir, None);
        assert!(
            matches!(opened, Err(Error::Corrupt { .. } | Error::Version { .. })),
            "byte {i} undetected: {opened:?}"
        );
    }
}

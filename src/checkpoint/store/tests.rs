use super::*;
use crate::position::{NextOffset, PartitionOffset};

fn manifest(id: u64) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        checkpoint: CheckpointId(id),
        pipeline: "p".into(),
        created_unix_ms: 0,
        writer: Some("w".into()),
        restored_from: None,
        offsets: vec![PartitionOffset {
            topic: "t".into(),
            partition: 0,
            next_offset: NextOffset(5),
        }],
        tasks: vec![TaskSnapshot {
            topic: "t".into(),
            partition: 0,
            next_offset: Some(NextOffset(5)),
            dir: "t-0".into(),
            files: vec![],
        }],
    }
}

#[test]
fn a_finished_checkpoint_verifies_and_a_flipped_byte_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), "p", "w").unwrap();
    let staging = store.begin(CheckpointId(1)).unwrap();
    std::fs::create_dir(staging.join("t-0")).unwrap();
    std::fs::write(staging.join("t-0/state.kv"), b"hello state").unwrap();
    store
        .finish(&staging, manifest(1), &[vec!["state.kv".into()]])
        .unwrap();
    assert_eq!(store.list().unwrap(), vec![CheckpointId(1)]);
    let m = store.manifest(CheckpointId(1)).unwrap();
    assert_eq!(m.tasks[0].files[0].len, 11);
    store.verify(CheckpointId(1), &m.tasks[0]).unwrap();

    let file = store.dir_of(CheckpointId(1)).join("t-0/state.kv");
    std::fs::write(&file, b"hellO state").unwrap();
    let err = store.verify(CheckpointId(1), &m.tasks[0]).unwrap_err();
    assert!(err.to_string().contains("state.kv"), "{err}");
    // a deleted file is damage too, not an I/O error a retry could get past
    std::fs::remove_file(&file).unwrap();
    let err = store.verify(CheckpointId(1), &m.tasks[0]).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("state.kv"), "{err}");
}

#[test]
fn unfinished_checkpoints_are_not_listed_and_are_cleaned_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "p", "w").unwrap();
    store.begin(CheckpointId(4)).unwrap();
    assert!(store.list().unwrap().is_empty());
    drop(store);
    let store = Store::open(tmp.path(), "p", "w").unwrap();
    assert_eq!(std::fs::read_dir(store.root()).unwrap().count(), 0);
}

#[test]
fn a_writer_takes_its_checkpoints_of_the_old_layout_and_no_one_elses() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("p");
    let write = |id: u64, writer: Option<&str>| {
        let dir = old.join(format!("chk-{id:020}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = manifest(id);
        m.writer = writer.map(Into::into);
        std::fs::write(
            dir.join(MANIFEST),
            crate::checkpoint::seal::encode_manifest(&m).unwrap(),
        )
        .unwrap();
    };
    write(1, None); // format 1: one writer then, whoever opens first
    write(2, Some("w"));
    write(3, Some("v"));
    std::fs::create_dir_all(old.join("chk-00000000000000000004.w.tmp")).unwrap();
    let w = Store::open(tmp.path(), "p", "w").unwrap();
    assert_eq!(w.list().unwrap(), [CheckpointId(1), CheckpointId(2)]);
    assert_eq!(
        w.manifest(CheckpointId(2)).unwrap().checkpoint,
        CheckpointId(2)
    );
    let v = Store::open(tmp.path(), "p", "v").unwrap();
    assert_eq!(v.list().unwrap(), [CheckpointId(3)]);
    let left: Vec<_> = std::fs::read_dir(&old)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["writers"]);
    assert_eq!(Store::writers(tmp.path(), "p").unwrap(), ["v", "w"]);
    let read = Store::reader(tmp.path(), "p", "v").unwrap();
    assert_eq!(read.list().unwrap(), [CheckpointId(3)]);
}

#[test]
fn a_writer_cleans_only_its_own_unfinished_checkpoints() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let other = Store::open(tmp.path(), "p", "flumen-p-1").unwrap();
    let theirs = other.begin(CheckpointId(7)).unwrap();
    let ours = Store::open(tmp.path(), "p", "flumen-p-0").unwrap();
    let mine = ours.begin(CheckpointId(7)).unwrap();
    assert_ne!(theirs, mine);
    Store::open(tmp.path(), "p", "flumen-p-0").unwrap();
    assert!(
        theirs.try_exists().unwrap(),
        "another writer's staging directory was deleted"
    );
    assert!(!mine.try_exists().unwrap());
    let mode = std::fs::metadata(tmp.path().join("p"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Two tasks' DBs each have a `000042.sst` of the same length but other bytes (file
/// numbers are per DB): each must get its own checksum, in this and the next checkpoint.
#[test]
fn same_named_ssts_of_different_tasks_keep_their_own_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), "p", "w").unwrap();
    let two_tasks = |id: u64| {
        let mut m = manifest(id);
        let mut second = m.tasks[0].clone();
        second.partition = 1;
        second.dir = "t-1".into();
        m.tasks.push(second);
        m
    };
    for id in [1, 2] {
        let staging = store.begin(CheckpointId(id)).unwrap();
        for (dir, bytes) in [("t-0", b"sst of task zero"), ("t-1", b"SST OF TASK ONE!")] {
            std::fs::create_dir(staging.join(dir)).unwrap();
            std::fs::write(staging.join(dir).join("000042.sst"), bytes).unwrap();
        }
        let files = vec![vec!["000042.sst".to_string()]; 2];
        store.finish(&staging, two_tasks(id), &files).unwrap();
        let m = store.manifest(CheckpointId(id)).unwrap();
        for task in &m.tasks {
            store.verify(CheckpointId(id), task).unwrap();
        }
    }
    // a flipped byte in an SST, its length unchanged, is caught before RocksDB opens it
    let m = store.manifest(CheckpointId(2)).unwrap();
    let file = store.dir_of(CheckpointId(2)).join("t-1/000042.sst");
    std::fs::write(&file, b"SST OF TASK ONE?").unwrap();
    let err = store.verify(CheckpointId(2), &m.tasks[1]).unwrap_err();
    assert!(err.to_string().contains("000042.sst"), "{err}");
}

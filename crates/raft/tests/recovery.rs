//! Recovery: a core built from what FileStorage recovered after a restart holds the same
//! state it had before (hard state, snapshot, log suffix), whatever whole segments storage
//! kept below the snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use raftlock_raft::{
    load_initial_state, Config, Entry, FileStorage, FileStorageOptions, HardState, NodeId,
    PeerConfig, RaftCore, SeededRand, Snapshot, SnapshotMeta, Storage,
};

fn config() -> Config {
    let peers = (1..=3)
        .map(|i| PeerConfig {
            id: NodeId::from(format!("n{i}")),
            address: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    Config::new("n1", peers)
}

#[test]
fn core_rebuilt_from_file_storage_after_restart_matches() {
    let dir = tempfile::tempdir().unwrap();
    let opts = FileStorageOptions {
        segment_size: 4096,
        ..Default::default()
    };
    {
        let mut s = FileStorage::open(dir.path(), opts.clone()).unwrap();
        s.set_hard_state(&HardState {
            term: 3,
            voted_for: Some(NodeId::from("n2")),
        })
        .unwrap();
        let entries: Vec<Entry> = (1..=300)
            .map(|i| Entry::normal(i, 1 + i / 100, Bytes::from(format!("cmd-{i}"))))
            .collect();
        s.append(&entries).unwrap();
        s.sync().unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_index: 250,
                last_term: s.term(250).unwrap(),
                membership: None,
            },
            data: Bytes::from_static(b"state at 250"),
        };
        s.save_snapshot(&snap).unwrap();
        s.compact(200).unwrap();
    }
    let s = FileStorage::open(dir.path(), opts).unwrap();
    let initial = load_initial_state(&s).unwrap();
    assert!(
        initial.entries.first().unwrap().index <= 201,
        "whole segments are kept"
    );
    assert_eq!(
        initial.snapshot.as_ref().unwrap().size,
        b"state at 250".len() as u64
    );
    assert_eq!(
        s.load_snapshot().unwrap().unwrap().data,
        Bytes::from_static(b"state at 250")
    );
    let core = RaftCore::new(config(), initial, Box::new(SeededRand::new(1))).unwrap();
    assert_eq!(core.term(), 3);
    assert_eq!(core.snapshot_index(), 250);
    assert_eq!(core.commit_index(), 250, "the snapshot is committed");
    assert_eq!(
        core.first_index(),
        251,
        "entries under the snapshot are dropped"
    );
    assert_eq!(core.last_index(), 300);
    assert_eq!(core.entry(300).unwrap().data, Bytes::from("cmd-300"));
}

//! The store across restarts and bad snapshots: what was flushed is there after reopening;
//! an interrupted snapshot install is completed at open; a truncated or corrupt snapshot is
//! refused and changes nothing; a data directory in an earlier build's layout is refused.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use chrono::Utc;
use ire_consensus::store::{self, LogStore, StateMachineStore, StoreOptions};
use ire_consensus::types::{ClusterNode, Command, Entry, LogId, Request, Response, Vote};
use ire_core::{LockOutcome, ResourceKey};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};

fn open(dir: &std::path::Path) -> (LogStore, StateMachineStore) {
    store::open(dir, StoreOptions::default().cache_capacity(4 << 20)).unwrap()
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

fn key(i: u64) -> ResourceKey {
    format!("docker/shop/svc-{i}/1").parse().unwrap()
}

/// Entries 1..=n: a membership, then acquires of distinct keys.
fn entries(n: u64) -> Vec<Entry> {
    let mut v = vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new(
            vec![[1u64, 2, 3].into()],
            [1u64, 2, 3]
                .into_iter()
                .map(|i| (i, ClusterNode::new(format!("127.0.0.1:{}", 7000 + i), None)))
                .collect::<std::collections::BTreeMap<u64, ClusterNode>>(),
        )),
    }];
    for i in 2..=n {
        v.push(Entry {
            log_id: log_id(i),
            payload: EntryPayload::Normal(Request::new(
                Command::Acquire {
                    key: key(i),
                    holder: format!("h{i}"),
                    ttl: Duration::from_secs(3600),
                },
                Utc::now(),
            )),
        });
    }
    v
}

async fn append(log: &mut LogStore, es: Vec<Entry>) {
    // Returns once the store reported the entries flushed.
    log.blocking_append(es).await.unwrap();
}

#[tokio::test]
async fn vote_log_and_applied_state_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open(dir.path());
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        append(&mut log, entries(20)).await;
        let responses = sm.apply(entries(20)).await.unwrap();
        assert!(matches!(
            responses[5],
            Response::Lock(LockOutcome::Granted(_))
        ));
    }
    let (mut log, mut sm) = open(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(20)));
    assert_eq!(
        log.try_get_log_entries(1..=20).await.unwrap(),
        entries_ids(20, &log).await
    );
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(20)));
    assert_eq!(membership.log_id(), &Some(log_id(1)));
    let info = sm.read(|v| v.lock_info(&key(7), Utc::now())).unwrap();
    assert_eq!(
        ire_consensus::state::locks::token_index(info.lease.unwrap().token),
        7,
        "the token names the log index of the grant"
    );
}

async fn entries_ids(n: u64, log: &LogStore) -> Vec<Entry> {
    let got = log.clone().try_get_log_entries(1..=n).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    got
}

/// A leader-side store with state, and its snapshot file's bytes.
async fn leader_snapshot(
    dir: &std::path::Path,
) -> (openraft::SnapshotMeta<u64, ClusterNode>, Vec<u8>) {
    let (_log, mut sm) = open(dir);
    sm.apply(entries(30)).await.unwrap();
    let mut snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let mut f = snap.snapshot.into_std().await;
    f.read_to_end(&mut bytes).unwrap();
    snap.snapshot = Box::new(tokio::fs::File::from_std(f));
    (snap.meta, bytes)
}

async fn install_bytes(
    sm: &mut StateMachineStore,
    meta: &openraft::SnapshotMeta<u64, ClusterNode>,
    bytes: &[u8],
) -> Result<(), String> {
    let mut f = sm
        .begin_receiving_snapshot()
        .await
        .unwrap()
        .into_std()
        .await;
    f.write_all(bytes).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    sm.install_snapshot(meta, Box::new(tokio::fs::File::from_std(f)))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn truncated_or_corrupt_snapshots_are_refused_and_change_nothing() {
    let leader = tempfile::tempdir().unwrap();
    let (meta, bytes) = leader_snapshot(leader.path()).await;
    let follower = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(follower.path());
    sm.apply(entries(5)).await.unwrap();
    let before = sm.read(|v| (v.last_applied().unwrap(), v.locks(Utc::now()).unwrap()));

    let truncated = &bytes[..bytes.len() - 7];
    let e = install_bytes(&mut sm, &meta, truncated).await.unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let mut corrupt = bytes.clone();
    corrupt[0] = b'X';
    let e = install_bytes(&mut sm, &meta, &corrupt).await.unwrap_err();
    assert!(e.contains("bad magic"), "{e}");
    let mut garbage = bytes.clone();
    let mid = garbage.len() / 2;
    garbage[mid..mid + 8].copy_from_slice(&[0xff; 8]);
    assert!(install_bytes(&mut sm, &meta, &garbage).await.is_err());

    let after = sm.read(|v| (v.last_applied().unwrap(), v.locks(Utc::now()).unwrap()));
    assert_eq!(before, after, "a refused snapshot changes nothing");

    // The intact snapshot installs.
    install_bytes(&mut sm, &meta, &bytes).await.unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(30)));
    assert_eq!(sm.read(|v| v.locks(Utc::now()).unwrap().len()), 29);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
}

#[tokio::test]
async fn an_interrupted_snapshot_install_is_completed_when_the_store_reopens() {
    let leader = tempfile::tempdir().unwrap();
    let (meta, bytes) = leader_snapshot(leader.path()).await;
    let follower = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open(follower.path());
        install_bytes(&mut sm, &meta, &bytes).await.unwrap();
    }
    // Simulate a crash in the middle of the install: the marker is set and a data tree
    // is half written.
    {
        let db = sled::open(follower.path().join(store::STATE_DB_DIR)).unwrap();
        db.open_tree("sm_meta")
            .unwrap()
            .insert("installing", &[])
            .unwrap();
        db.open_tree("sm_locks").unwrap().clear().unwrap();
        db.open_tree("sm_meta")
            .unwrap()
            .remove("last_applied")
            .unwrap();
        db.flush().unwrap();
    }
    let (_log, mut sm) = open(follower.path());
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(30)));
    assert_eq!(sm.read(|v| v.locks(Utc::now()).unwrap().len()), 29);
}

/// Waits (bounded) until the log holds exactly `n` entries: purges run on a blocking thread.
async fn until_len(log: &LogStore, n: usize) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.len() != n {
        assert!(
            tokio::time::Instant::now() < end,
            "the log holds {} entries, expected {n}",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn purge_and_truncate_keep_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(dir.path());
    append(&mut log, entries(40)).await;
    // The state machine covers the log up to 30 once a snapshot made it durable.
    sm.apply(entries(40).into_iter().take(30)).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    log.purge(log_id(25)).await.unwrap();
    log.truncate(log_id(36)).await.unwrap();
    until_len(&log, 10).await;
    drop(log);
    drop(sm);
    let (mut log, _sm) = open(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(25)));
    assert_eq!(state.last_log_id, Some(log_id(35)));
    let got: Vec<u64> = log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(got, (26..=35).collect::<Vec<_>>());
}

/// openraft purges a follower's log up to a snapshot right after it asks the state machine
/// to install it, without waiting. A node stopped in between must still find its log
/// starting at or below its applied state, or it cannot restart (the entries it must
/// re-apply are gone). The purge is hidden from openraft at once, and carried out only up to
/// what the state machine durably covers.
#[tokio::test]
async fn a_purge_ahead_of_the_state_machine_keeps_the_entries_it_still_needs() {
    let leader = tempfile::tempdir().unwrap();
    let (meta, _bytes) = leader_snapshot(leader.path()).await;
    let follower = tempfile::tempdir().unwrap();
    {
        // The follower has entries 1..=12, applied 1..=10, made durable by a snapshot.
        let (mut log, mut sm) = open(follower.path());
        append(&mut log, entries(12)).await;
        sm.apply(entries(10)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        // The leader's snapshot covers 30: openraft purges up to it at once.
        log.purge(meta.last_log_id.unwrap()).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, meta.last_log_id);
        assert_eq!(state.last_log_id, meta.last_log_id);
        assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());
        // Only what the state machine covers is removed.
        until_len(&log, 2).await;
        // Stopped before the install was recorded.
    }
    let (mut log, mut sm) = open(follower.path());
    let state = log.get_log_state().await.unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(10)));
    assert!(
        state.last_purged_log_id <= applied,
        "the log starts above the applied state: purged {:?}, applied {applied:?}",
        state.last_purged_log_id
    );
    assert_eq!(state.last_log_id, Some(log_id(12)));
    let got: Vec<u64> = log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(
        got,
        vec![11, 12],
        "the entries above the applied state are kept"
    );
}

#[tokio::test]
async fn a_data_directory_in_the_single_database_layout_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = sled::open(dir.path().join("sled")).unwrap();
        old.insert("vote", &[1u8]).unwrap();
        old.flush().unwrap();
    }
    let Err(err) = store::open(dir.path(), StoreOptions::default()) else {
        panic!("an old layout was opened");
    };
    let message = err.to_string();
    assert!(
        matches!(err, ire_consensus::error::StoreError::OldLayout { .. }),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("move the directory aside"), "{message}");
    // Nothing was created beside the old database.
    assert!(!dir.path().join(store::LOG_DB_DIR).exists());
    assert!(!dir.path().join(store::STATE_DB_DIR).exists());
}

//! The reporter's storage backends: core's conformance suite, and sled's durability.

use ire_actors::reporter::{MemoryStorage, SledStorage};
use ire_core::testsuite::storage_conformance;
use ire_core::{Query, StorageBackend};
use serde_json::json;

#[tokio::test]
async fn memory_storage_passes_the_storage_conformance_suite() {
    storage_conformance(&MemoryStorage::new(), "mem").await;
}

#[tokio::test]
async fn sled_storage_passes_the_storage_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open_with_cache(dir.path(), 1 << 20).unwrap();
    storage_conformance(&store, "sled").await;
}

#[tokio::test]
async fn sled_storage_keeps_acknowledged_writes_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStorage::open_with_cache(dir.path(), 1 << 20).unwrap();
        store
            .save("executions", "k1", json!({"n": 1}))
            .await
            .unwrap();
        store
            .save_batch(
                "executions",
                (2..=50)
                    .map(|i| (format!("k{i:02}"), json!({"n": i})))
                    .collect(),
            )
            .await
            .unwrap();
        store.delete("executions", "k1").await.unwrap();
        // No close: an acknowledged write must not depend on a clean shutdown.
    }
    let store = SledStorage::open_with_cache(dir.path(), 1 << 20).unwrap();
    let all = store
        .query(&Query {
            collection: "executions".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 49);
    assert!(store.load("executions", "k1").await.is_err());
    assert_eq!(
        store.load("executions", "k50").await.unwrap(),
        json!({"n": 50})
    );
}

#[tokio::test]
async fn storage_rejects_an_empty_collection_or_key_with_a_clear_error() {
    let store = MemoryStorage::new();
    let e = store.save("", "k", json!(1)).await.unwrap_err();
    assert!(e.to_string().contains("collection"), "{e}");
    let e = store.save("c", "", json!(1)).await.unwrap_err();
    assert!(e.to_string().contains("key"), "{e}");
}

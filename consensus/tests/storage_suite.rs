//! openraft's own storage test suite, run against the sled log store and state machine.

use ire_consensus::store::{self, LogStore, StateMachineStore, StoreOptions};
use ire_consensus::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};

/// Builds a fresh store in a temporary directory; the directory lives as long as the store.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
        // A small cache: the suite opens many stores.
        let (log, sm) = store::open(dir.path(), StoreOptions::default().cache_capacity(4 << 20))
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("openraft's storage suite failed: {e}");
    }
}

//! The sled store: the raft log ([`LogStore`]) and the state machine
//! ([`StateMachineStore`]), implementing openraft's storage-v2 traits directly.
//!
//! Both live in one sled database under the node's data directory; snapshots are files in
//! `<dir>/snapshots`. See `docs/consensus.md` for the trees, the durability points and the
//! snapshot and purge policy.

pub mod codec;
pub mod handoffs;
pub mod log;
pub mod snapshot;
pub mod state_machine;

use std::path::Path;

pub use log::LogStore;
pub use state_machine::StateMachineStore;

use crate::error::{StoreError, StoreResult};

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache, in bytes (sled's own default is 1 GiB; ire's is 64 MiB).
    pub cache_capacity: u64,
    /// How often sled flushes in the background, in milliseconds (None: only the store's
    /// own flushes). Log appends and votes are flushed before they are acknowledged
    /// whatever this says.
    pub flush_every_ms: Option<u64>,
    /// After sled's flush of a log append or a vote, also `fdatasync` sled's data file.
    ///
    /// On Linux sled's flush writes with `sync_file_range`, which waits for the data to
    /// reach the device but neither flushes the device's write cache nor the file's
    /// metadata; sled's background flush (`flush_every_ms`) does a full `fsync`. With this
    /// set, an acknowledged append survives a power loss at once, at the price of one
    /// `fdatasync` per append batch (see `docs/benchmarks.md` for both figures).
    pub fsync_log: bool,
}

/// ire's default sled cache: small, the state machine's tables live on disk.
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            flush_every_ms: Some(500),
            fsync_log: false,
        }
    }
}

impl StoreOptions {
    /// Sets sled's cache capacity in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Sets whether log appends and votes are also `fdatasync`ed (see [`StoreOptions::fsync_log`]).
    pub fn fsync_log(mut self, yes: bool) -> Self {
        self.fsync_log = yes;
        self
    }
}

/// Opens (or creates) the store in `dir`: the raft log and the state machine.
///
/// A snapshot install interrupted by a crash is completed here, from the snapshot file.
/// Only one process may have a directory open; the handles are cheap to clone and the
/// database closes when the last one is dropped.
pub fn open(dir: &Path, opts: StoreOptions) -> StoreResult<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::SnapshotIo {
        path: dir.to_owned(),
        source,
    })?;
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .cache_capacity(opts.cache_capacity)
        .flush_every_ms(opts.flush_every_ms)
        .open()
        .map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source,
        })?;
    let fsync = if opts.fsync_log {
        let file = dir.join("sled").join("db");
        // fsync acts on the file, whichever descriptor asks: this one flushes sled's writes.
        Some(
            std::fs::File::open(&file)
                .map_err(|source| StoreError::SnapshotIo { path: file, source })?,
        )
    } else {
        None
    };
    let log = LogStore::open(db.clone(), fsync)?;
    let sm = StateMachineStore::open(db, dir.join("snapshots"))?;
    Ok((log, sm))
}

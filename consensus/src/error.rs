//! The storage layer's error: what failed, on which file or tree, and why.

use std::path::PathBuf;

/// A failure of the sled store or of a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled database could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: sled::Error,
    },
    /// The data directory holds the single-database layout of earlier builds (`sled/`),
    /// which this build does not read.
    #[error(
        "the data directory {path} holds an earlier build's single sled database (`sled/`); \
         this build keeps the raft log in `raft-log/` and the state machine in `state/`: \
         move the directory aside and let the node rejoin (it catches up from the cluster)"
    )]
    OldLayout {
        /// The data directory.
        path: PathBuf,
    },
    /// A sled operation failed.
    #[error("store {op} failed: {source}")]
    Sled {
        /// What was being done (`append log`, `save vote`, ...).
        op: &'static str,
        /// Why.
        #[source]
        source: sled::Error,
    },
    /// A stored or received value could not be encoded.
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A stored or received value could not be decoded (corrupt or truncated data).
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A snapshot file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    SnapshotIo {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot is malformed (truncated, wrong version, inconsistent).
    #[error("invalid snapshot: {0}")]
    BadSnapshot(String),
    /// The store's content contradicts itself.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A sled failure while doing `op`.
    pub fn sled(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |source| StoreError::Sled { op, source }
    }
}

impl From<StoreError> for ire_core::Error {
    fn from(e: StoreError) -> Self {
        // A local storage failure is not something a retry fixes, except a plain I/O hiccup;
        // the node's supervisor decides whether to stop.
        ire_core::Error::Other {
            message: "consensus store".to_owned(),
            class: ire_core::ErrorClass::Fatal,
            source: Some(Box::new(e)),
        }
    }
}

/// The result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

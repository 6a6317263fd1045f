//! Making a sled database's writes durable: sled's own flush, then (by default) `fdatasync`
//! of its data file and of the blob files it wrote since the last sync.
//!
//! sled 0.34's `flush()` writes its I/O buffers with `pwrite` and `sync_file_range` on Linux:
//! the data has left the process (a process crash loses nothing) but neither the device's
//! write cache nor the file's metadata is flushed, and values too large for a log segment
//! (about 128 KiB) go to files of their own under `blobs/`, written without any sync. So
//! [`Durability::Sync`] adds an `fdatasync` of every blob file newer than the last sync, of
//! the blob directory, then of the data file: what a sync returned from survives a power
//! loss. [`Durability::Relaxed`] stops after sled's flush: it survives a process crash, not
//! a power loss.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What an acknowledged log append or vote survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before acknowledging: survives a power loss (the default).
    #[default]
    Sync,
    /// sled's flush only: survives a process crash, not a power loss (the last appends
    /// acknowledged before a power cut may be lost; sled's background `fsync` every
    /// `flush_every_ms` bounds how many).
    Relaxed,
}

/// Syncs one sled database directory (see the module docs).
pub(crate) struct DbSync {
    db: sled::Db,
    mode: Durability,
    /// sled's data file (`<dir>/db`).
    data: File,
    /// `<dir>/blobs`.
    blobs: PathBuf,
    /// The highest blob (named by its log sequence number) synced so far.
    synced_blob: Mutex<Option<u64>>,
}

impl DbSync {
    /// Prepares syncing `db`, opened at `dir`. In [`Durability::Sync`] the directory entries
    /// of the data file and of the blob directory are synced once here.
    pub(crate) fn new(db: sled::Db, dir: &Path, mode: Durability) -> std::io::Result<Self> {
        let data = File::open(dir.join("db"))?;
        let blobs = dir.join("blobs");
        if mode == Durability::Sync {
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(Self {
            db,
            mode,
            data,
            blobs,
            synced_blob: Mutex::new(None),
        })
    }

    /// sled's flush, then in [`Durability::Sync`] the blobs written since the last sync,
    /// their directory and the data file.
    ///
    /// Blobs go first: a log record that points to a blob is useless without it.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        if self.mode == Durability::Relaxed {
            return Ok(());
        }
        self.sync_new_blobs()?;
        self.data.sync_data()
    }

    fn sync_new_blobs(&self) -> std::io::Result<()> {
        let mut synced = self.synced_blob.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = *synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if synced.is_some_and(|s| lsn <= s) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_data()?,
                // Garbage-collected meanwhile: nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            newest = newest.max(Some(lsn));
        }
        if newest != *synced {
            sync_dir(&self.blobs)?;
            *synced = newest;
        }
        Ok(())
    }
}

/// Runs a blocking call (a sync) from async code without stalling a tokio worker: on a
/// multi-threaded runtime the worker hands its other tasks over while it waits
/// (`block_in_place`: no thread hop for the caller), elsewhere it simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `fsync` of a directory: makes the names it holds durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_files_are_found_and_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db1");
        let db = sled::Config::new().path(&path).open().unwrap();
        let sync = DbSync::new(db.clone(), &path, Durability::Sync).unwrap();
        sync.sync().unwrap();
        assert_eq!(*sync.synced_blob.lock().unwrap(), None);
        // A value larger than a quarter of sled's 512 KiB segment goes to a blob file.
        db.insert(b"big", vec![7u8; 300 << 10]).unwrap();
        sync.sync().unwrap();
        let blobs: Vec<u64> = std::fs::read_dir(path.join("blobs"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        assert!(!blobs.is_empty(), "sled wrote no blob file");
        assert_eq!(
            *sync.synced_blob.lock().unwrap(),
            blobs.iter().max().copied()
        );
    }
}

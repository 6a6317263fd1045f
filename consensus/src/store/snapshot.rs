//! The snapshot file: the state machine's data trees, streamed row by row.
//!
//! Layout: the magic `IRESNAP1`, then frames, each a little-endian `u32` length and a
//! bincode [`Frame`]: one `Header` (the snapshot's metadata and the state machine's clock),
//! one `Row` per key of every data tree, and an `End` with the row count. A file without its
//! `End`, or whose count or CRC-32 (of every frame before it) disagrees, is refused before
//! anything is changed.
//! Rows are copied as stored (already-encoded sled values), so building and installing a
//! snapshot never holds the whole state in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, MAX_VALUE_BYTES};
use super::export::BeforeImages;
use crate::error::{StoreError, StoreResult};
use crate::state::Tables;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"IRESNAP1";
const MAX_FRAME: usize = MAX_VALUE_BYTES + 4096;
const IMPORT_BATCH: usize = 1024;
const IMPORT_FLUSH_BYTES: usize = 16 << 20;

/// Raw bytes, encoded as one length-prefixed block (serde's default for `Vec<u8>` is a
/// sequence of single bytes, which is much slower for large snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bytes, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = a.next_element()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One frame of a snapshot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First: what the snapshot covers.
    Header {
        /// The snapshot's metadata (last log id, membership, id).
        meta: SnapshotMeta,
        /// The state machine's clock when it was taken.
        clock: Option<DateTime<Utc>>,
    },
    /// One key of one data tree.
    Row {
        /// The tree, as an index into [`Tables::DATA_NAMES`].
        tree: u8,
        /// The key.
        key: Bytes,
        /// The stored value.
        value: Bytes,
    },
    /// Last: how many rows came before.
    End {
        /// The number of `Row` frames.
        rows: u64,
        /// CRC-32 of every frame before this one (length prefixes included).
        crc: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::SnapshotIo {
        path: path.to_owned(),
        source,
    }
}

fn write_frame(
    w: &mut impl Write,
    crc: &mut crc32fast::Hasher,
    frame: &Frame,
    path: &Path,
) -> StoreResult<()> {
    let bytes = encode("snapshot frame", frame)?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| StoreError::BadSnapshot("a row larger than 4 GiB".into()))?
        .to_le_bytes();
    crc.update(&len);
    crc.update(&bytes);
    w.write_all(&len).map_err(io_err(path))?;
    w.write_all(&bytes).map_err(io_err(path))
}

/// Writes the end frame, with the row count and the CRC of everything before it.
fn write_end(
    w: &mut impl Write,
    crc: crc32fast::Hasher,
    rows: u64,
    path: &Path,
) -> StoreResult<()> {
    let end = Frame::End {
        rows,
        crc: crc.finalize(),
    };
    write_frame(w, &mut crc32fast::Hasher::new(), &end, path)
}

/// Reads one frame; `Ok(None)` at a clean end of file. Every frame but the end frame goes
/// into `crc`.
fn read_frame(
    r: &mut impl Read,
    crc: &mut crc32fast::Hasher,
    path: &Path,
) -> StoreResult<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(StoreError::BadSnapshot(format!(
            "{}: a frame claims {len} bytes",
            path.display()
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StoreError::BadSnapshot(format!("{}: truncated inside a frame", path.display()))
        } else {
            io_err(path)(e)
        }
    })?;
    let frame: Frame = decode("snapshot frame", &buf)?;
    if !matches!(frame, Frame::End { .. }) {
        crc.update(&(len as u32).to_le_bytes());
        crc.update(&buf);
    }
    Ok(Some(frame))
}

/// Checks an end frame against what was read.
fn check_end(
    frame_rows: u64,
    frame_crc: u32,
    rows: u64,
    crc: crc32fast::Hasher,
    path: &Path,
) -> StoreResult<()> {
    if frame_rows != rows {
        return Err(StoreError::BadSnapshot(format!(
            "{}: {rows} rows but the end frame says {frame_rows}",
            path.display()
        )));
    }
    let actual = crc.finalize();
    if actual != frame_crc {
        return Err(StoreError::BadSnapshot(format!(
            "{}: checksum mismatch (computed {actual:08x}, expected {frame_crc:08x}): corrupt data",
            path.display()
        )));
    }
    Ok(())
}

/// How much of a snapshot file may be written before it is synced: see [`SyncingFile`].
const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// A file synced every [`SYNC_EVERY_BYTES`] while it is written. On ext4 (`data=ordered`) a
/// journal commit, which every `fdatasync` of the raft log needs, first writes out the dirty
/// data of every file in the transaction: a snapshot written in one go would make log
/// appends (lease renewals) wait for hundreds of megabytes. Synced as it goes, at most a
/// few megabytes are ever pending.
pub(crate) struct SyncingFile {
    file: File,
    unsynced: u64,
}

impl Write for SyncingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `path` durably: to `path.tmp` (synced as it goes), fsync, rename, fsync of the
/// directory.
fn write_durably(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<SyncingFile>, &Path) -> StoreResult<()>,
) -> StoreResult<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, SyncingFile { file, unsynced: 0 });
    w.write_all(MAGIC).map_err(io_err(&tmp))?;
    body(&mut w, &tmp)?;
    let file = w
        .into_inner()
        .map_err(|e| io_err(&tmp)(e.into_error()))?
        .file;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes the data trees of `tables` to `path` as a snapshot described by `meta`: the state
/// at the point `images` started recording, whatever applies change meanwhile
/// ([`BeforeImages`]).
pub fn export(
    tables: &Tables,
    images: &BeforeImages,
    meta: &SnapshotMeta,
    clock: Option<DateTime<Utc>>,
    path: &Path,
) -> StoreResult<u64> {
    let mut rows = 0u64;
    write_durably(path, |w, p| {
        let mut crc = crc32fast::Hasher::new();
        write_frame(
            w,
            &mut crc,
            &Frame::Header {
                meta: meta.clone(),
                clock,
            },
            p,
        )?;
        for (i, tree) in tables.data().into_iter().enumerate() {
            images.export_tree(i, tree, |k, v| {
                rows += 1;
                write_frame(
                    w,
                    &mut crc,
                    &Frame::Row {
                        tree: i as u8,
                        key: Bytes(k.to_vec()),
                        value: Bytes(v.to_vec()),
                    },
                    p,
                )
            })?;
        }
        write_end(w, crc, rows, p)
    })?;
    Ok(rows)
}

/// Reads a snapshot from `src` (as received from the leader), checking every frame, and
/// writes it durably to `dest`. Returns the header's metadata and clock. Nothing is written
/// at `dest` unless the whole snapshot is well formed.
pub fn receive(
    src: &mut impl Read,
    src_name: &Path,
    dest: &Path,
) -> StoreResult<(SnapshotMeta, Option<DateTime<Utc>>)> {
    let mut r = BufReader::with_capacity(1 << 20, src);
    read_magic(&mut r, src_name)?;
    let mut src_crc = crc32fast::Hasher::new();
    let (meta, clock) = match read_frame(&mut r, &mut src_crc, src_name)? {
        Some(Frame::Header { meta, clock }) => (meta, clock),
        other => {
            return Err(StoreError::BadSnapshot(format!(
                "{}: expected a header, found {other:?}",
                src_name.display()
            )))
        }
    };
    write_durably(dest, |w, p| {
        let mut crc = crc32fast::Hasher::new();
        write_frame(
            w,
            &mut crc,
            &Frame::Header {
                meta: meta.clone(),
                clock,
            },
            p,
        )?;
        let mut rows = 0u64;
        loop {
            match read_frame(&mut r, &mut src_crc, src_name)? {
                Some(row @ Frame::Row { tree, .. }) => {
                    check_tree(tree, src_name)?;
                    write_frame(w, &mut crc, &row, p)?;
                    rows += 1;
                }
                Some(Frame::End { rows: n, crc: c }) => {
                    check_end(n, c, rows, src_crc, src_name)?;
                    return write_end(w, crc, rows, p);
                }
                Some(Frame::Header { .. }) => {
                    return Err(StoreError::BadSnapshot(format!(
                        "{}: a second header",
                        src_name.display()
                    )))
                }
                None => {
                    return Err(StoreError::BadSnapshot(format!(
                        "{}: truncated after {rows} rows (no end frame)",
                        src_name.display()
                    )))
                }
            }
        }
    })?;
    Ok((meta, clock))
}

fn read_magic(r: &mut impl Read, path: &Path) -> StoreResult<()> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| {
        StoreError::BadSnapshot(format!("{}: too short for a snapshot", path.display()))
    })?;
    if &magic != MAGIC {
        return Err(StoreError::BadSnapshot(format!(
            "{}: not an ire snapshot (bad magic)",
            path.display()
        )));
    }
    Ok(())
}

fn check_tree(tree: u8, path: &Path) -> StoreResult<()> {
    if tree as usize >= Tables::DATA_NAMES.len() {
        return Err(StoreError::BadSnapshot(format!(
            "{}: a row of unknown tree {tree}",
            path.display()
        )));
    }
    Ok(())
}

/// Reads the header of a snapshot file.
pub fn read_header(path: &Path) -> StoreResult<(SnapshotMeta, Option<DateTime<Utc>>)> {
    let mut r = BufReader::new(File::open(path).map_err(io_err(path))?);
    read_magic(&mut r, path)?;
    match read_frame(&mut r, &mut crc32fast::Hasher::new(), path)? {
        Some(Frame::Header { meta, clock }) => Ok((meta, clock)),
        other => Err(StoreError::BadSnapshot(format!(
            "{}: expected a header, found {other:?}",
            path.display()
        ))),
    }
}

/// Replaces the data trees with the rows of the (already checked) snapshot at `path`.
/// Not atomic: the caller marks the install in the meta tree first and redoes it at open
/// if it was interrupted.
pub fn import(tables: &Tables, path: &Path) -> StoreResult<(SnapshotMeta, Option<DateTime<Utc>>)> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    read_magic(&mut r, path)?;
    let mut crc = crc32fast::Hasher::new();
    let (meta, clock) = match read_frame(&mut r, &mut crc, path)? {
        Some(Frame::Header { meta, clock }) => (meta, clock),
        _ => {
            return Err(StoreError::BadSnapshot(format!(
                "{}: no header",
                path.display()
            )))
        }
    };
    let trees = tables.data();
    for t in trees {
        t.clear().map_err(StoreError::sled("clear for snapshot"))?;
    }
    let mut batches: Vec<sled::Batch> = (0..trees.len()).map(|_| Default::default()).collect();
    let mut pending = 0usize;
    let mut rows = 0u64;
    let mut unflushed_bytes = 0usize;
    loop {
        match read_frame(&mut r, &mut crc, path)? {
            Some(Frame::Row { tree, key, value }) => {
                check_tree(tree, path)?;
                unflushed_bytes += key.0.len() + value.0.len();
                batches[tree as usize].insert(key.0, value.0);
                pending += 1;
                rows += 1;
                if pending >= IMPORT_BATCH {
                    flush_batches(&trees, &mut batches)?;
                    pending = 0;
                }
                if unflushed_bytes >= IMPORT_FLUSH_BYTES {
                    // sled keeps written pages in memory until they are flushed: without
                    // this, installing a large snapshot costs many times its size in RAM.
                    trees[0]
                        .flush()
                        .map_err(StoreError::sled("flush during install"))?;
                    unflushed_bytes = 0;
                }
            }
            Some(Frame::End { rows: n, crc: c }) => {
                check_end(n, c, rows, crc, path)?;
                break;
            }
            _ => {
                return Err(StoreError::BadSnapshot(format!(
                    "{}: malformed after {rows} rows",
                    path.display()
                )))
            }
        }
    }
    flush_batches(&trees, &mut batches)?;
    Ok((meta, clock))
}

fn flush_batches(trees: &[&sled::Tree], batches: &mut [sled::Batch]) -> StoreResult<()> {
    for (t, b) in trees.iter().zip(batches.iter_mut()) {
        t.apply_batch(std::mem::take(b))
            .map_err(StoreError::sled("install snapshot"))?;
    }
    Ok(())
}

/// The file of the snapshot `id` in `dir`.
pub fn file_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.snap"))
}

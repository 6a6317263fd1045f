//! File transfer: tar archives of a resource's files, out of it and into it, as streams.
//!
//! An adapter that can read and write a resource's files offers [`FileTransfer`]. Archives
//! are plain (uncompressed) tar, binary-safe, and always streamed: neither side holds a
//! whole archive in memory, so a backup of many gigabytes costs a few chunks of memory.
//!
//! Entries are named as `tar -C <parent> -cf - <name>` names them: an
//! archive of `/data` holds `data`, `data/a`, `data/sub/b`; extracting it into `/` puts
//! it back where it was.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// A stream of byte chunks (an archive being read or written).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Copying files out of and into resources as tar archives.
#[async_trait]
pub trait FileTransfer: Send + Sync {
    /// A tar archive of `path` (a file or a directory tree) in the resource, produced as
    /// the stream is read. A missing path is `NotFound`.
    async fn archive_out(&self, id: &str, path: &str) -> Result<ByteStream>;

    /// Extracts the tar archive into the existing directory `dir` of the resource,
    /// consuming the stream as it goes; an error in the stream fails the extraction.
    async fn archive_in(&self, id: &str, dir: &str, archive: ByteStream) -> Result<()>;

    /// Removes a file or a directory tree in the resource; one already gone is `Ok`.
    async fn remove_path(&self, id: &str, path: &str) -> Result<()>;
}

/// Splits a path into its parent directory and last component (`/srv/data` ->
/// (`/srv`, `data`); `data` -> (`.`, `data`)), the pair tar's `-C <parent> <name>` takes.
/// Trailing slashes are ignored; the root and empty paths have no last component.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." || trimmed.ends_with("/..") {
        return None;
    }
    match trimmed.rfind('/') {
        Some(0) => Some(("/", &trimmed[1..])),
        Some(i) => Some((&trimmed[..i], &trimmed[i + 1..])),
        None => Some((".", trimmed)),
    }
    .filter(|(_, name)| *name != "." && *name != "..")
}

#[cfg(test)]
mod tests {
    use super::split_parent;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_parent("/srv/data"), Some(("/srv", "data")));
        assert_eq!(split_parent("/srv/data/"), Some(("/srv", "data")));
        assert_eq!(split_parent("/data"), Some(("/", "data")));
        assert_eq!(split_parent("data"), Some((".", "data")));
        assert_eq!(split_parent("a/b.txt"), Some(("a", "b.txt")));
        for none in ["", "/", ".", "..", "/a/..", "a/."] {
            assert_eq!(split_parent(none), None, "{none:?}");
        }
    }
}

//! How values and keys are laid out in sled.
//!
//! Values are bincode (serde mode, standard config) with a decode limit, so a corrupt length
//! prefix is an error rather than a huge allocation. Keys are built so that sled's byte order
//! is the order queries want: big-endian integers, times shifted to sort as unsigned.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{StoreError, StoreResult};

/// The largest value the store decodes (a ledger record with a large revert snapshot fits).
pub const MAX_VALUE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE_BYTES>()
}

/// Encodes `value` (a `what`) with bincode.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| StoreError::Encode {
        what,
        message: e.to_string(),
    })
}

/// Decodes a `what` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> StoreResult<T> {
    let (v, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| StoreError::Decode {
            what,
            message: e.to_string(),
        })?;
    if read != bytes.len() {
        return Err(StoreError::Decode {
            what,
            message: format!("{} trailing bytes after the value", bytes.len() - read),
        });
    }
    Ok(v)
}

/// A log index as a key: big-endian, so sled orders entries by index.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index back from an [`index_key`].
pub fn index_from_key(key: &[u8]) -> StoreResult<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A time as 8 bytes that sort like the time (microseconds, sign bit flipped).
pub fn time_key(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// Separates a key's text prefix from what follows; text is checked not to contain it.
pub const SEP: u8 = 0;

/// `prefix SEP time id`: entries of one prefix (a resource, a campaign), in time order.
pub fn prefixed_time_key(prefix: &str, t: DateTime<Utc>, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9 + id.len());
    k.extend_from_slice(prefix.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&time_key(t));
    k.extend_from_slice(id.as_bytes());
    k
}

/// `time id`: entries in time order.
pub fn plain_time_key(t: DateTime<Utc>, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&time_key(t));
    k.extend_from_slice(id.as_bytes());
    k
}

/// The bounds `[from, to]` of a time range within an optional prefix.
pub fn time_range(
    prefix: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> (Vec<u8>, Vec<u8>) {
    let mut from = Vec::new();
    let mut to = Vec::new();
    if let Some(p) = prefix {
        from.extend_from_slice(p.as_bytes());
        from.push(SEP);
        to.extend_from_slice(p.as_bytes());
        to.push(SEP);
    }
    match since {
        Some(t) => from.extend_from_slice(&time_key(t)),
        None => from.extend_from_slice(&[0; 8]),
    }
    match until {
        Some(t) => to.extend_from_slice(&time_key(t)),
        None => to.extend_from_slice(&[0xff; 8]),
    }
    // Everything with the `until` time, whatever its id, is in range.
    to.extend_from_slice(&[0xff; 8]);
    (from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_keys_sort_like_times_including_before_the_epoch() {
        let times = [
            Utc.timestamp_opt(-10_000, 0).unwrap(),
            Utc.timestamp_opt(-1, 999_999_000).unwrap(),
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1, 0).unwrap(),
            Utc.timestamp_opt(1_800_000_000, 5_000).unwrap(),
        ];
        for w in times.windows(2) {
            assert!(time_key(w[0]) < time_key(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn decode_refuses_truncated_and_trailing_bytes() {
        let bytes = encode("v", &("hello".to_owned(), 42u64)).unwrap();
        assert!(decode::<(String, u64)>("v", &bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(String, u64)>("v", &longer).is_err());
        assert_eq!(
            decode::<(String, u64)>("v", &bytes).unwrap(),
            ("hello".to_owned(), 42)
        );
    }

    #[test]
    fn decode_refuses_a_huge_claimed_length_without_allocating() {
        // A length prefix claiming u64::MAX bytes.
        let bytes = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let err = decode::<Vec<u8>>("v", &bytes).unwrap_err();
        assert!(err.to_string().contains("cannot decode v"), "{err}");
    }
}

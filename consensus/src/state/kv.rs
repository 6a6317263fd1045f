//! The rules of the replicated key-value table behind ire-core's `StorageBackend`: what a
//! valid collection, key and value are, and how a row's key is laid out.
//!
//! A row's key is `collection, NUL, key`, so one collection is one contiguous prefix of the
//! tree, in key order; its value is the JSON text as the client serialized it.

use crate::store::codec::SEP;
use crate::types::Rejection;

/// Checks a collection name: non-empty and without NUL (NUL ends the collection in a row key).
pub fn check_collection(collection: &str) -> Result<(), Rejection> {
    if collection.is_empty() {
        return Err(Rejection::invalid(
            "storage.collection",
            "must not be empty",
        ));
    }
    if collection.as_bytes().contains(&SEP) {
        return Err(Rejection::invalid(
            "storage.collection",
            format!("{collection:?} must not contain NUL"),
        ));
    }
    Ok(())
}

/// Checks a whole batch of a put: the collection, and every value is one JSON document.
pub fn check_put(collection: &str, items: &[(String, String)]) -> Result<(), Rejection> {
    check_collection(collection)?;
    for (key, value) in items {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(value) {
            return Err(Rejection::invalid(
                "storage.value",
                format!("{collection}/{key}: not a JSON document: {e}"),
            ));
        }
    }
    Ok(())
}

/// The prefix under which every row of `collection` lies.
pub fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(collection.len() + 1);
    p.extend_from_slice(collection.as_bytes());
    p.push(SEP);
    p
}

/// The row key of `key` in `collection`.
pub fn row_key(collection: &str, key: &str) -> Vec<u8> {
    let mut k = collection_prefix(collection);
    k.extend_from_slice(key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_do_not_share_prefixes() {
        // "a" must not see the rows of "ab": the NUL ends the collection name.
        assert!(!row_key("ab", "x").starts_with(&collection_prefix("a")));
        assert!(row_key("a", "bx").starts_with(&collection_prefix("a")));
    }

    #[test]
    fn a_put_with_a_bad_value_or_collection_is_refused() {
        assert!(check_put("c", &[("k".into(), "{\"n\":1}".into())]).is_ok());
        assert!(check_put("c", &[("k".into(), "{not json".into())]).is_err());
        assert!(check_put("", &[]).is_err());
        assert!(check_put("a\0b", &[]).is_err());
    }
}

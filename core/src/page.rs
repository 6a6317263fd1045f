//! Offset/limit pagination, shared by every query in ire.

/// Skips `offset` items and keeps at most `limit` (all when `None`).
pub fn paginate<I: IntoIterator>(items: I, offset: usize, limit: Option<usize>) -> Vec<I::Item> {
    let it = items.into_iter().skip(offset);
    match limit {
        Some(n) => it.take(n).collect(),
        None => it.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::paginate;

    #[test]
    fn pages() {
        assert_eq!(paginate(0..10, 2, Some(3)), [2, 3, 4]);
        assert_eq!(paginate(0..10, 8, None), [8, 9]);
        assert!(paginate(0..10, 20, Some(3)).is_empty());
    }
}

//! The StorageBackend suite (seed properties 3 and 37).

use serde_json::json;

use crate::error::Error;
use crate::report::{Query, SortField, StorageBackend};

/// Runs every storage check in collections prefixed with `prefix`.
pub async fn storage_conformance(store: &dyn StorageBackend, prefix: &str) {
    let c = format!("{prefix}-records");
    let other = format!("{prefix}-other");

    store
        .save(&c, "a", json!({"n": 2, "kind": "x"}))
        .await
        .expect("save");
    assert_eq!(
        store.load(&c, "a").await.expect("load"),
        json!({"n": 2, "kind": "x"})
    );
    store
        .save(&c, "a", json!({"n": 1, "kind": "x"}))
        .await
        .expect("overwrite");
    assert_eq!(
        store.load(&c, "a").await.unwrap(),
        json!({"n": 1, "kind": "x"}),
        "save did not replace"
    );

    match store.load(&c, "missing").await {
        Err(e) => assert!(
            matches!(e.root(), Error::NotFound { .. }),
            "missing key: {e}"
        ),
        Ok(v) => panic!("load of a missing key returned {v}"),
    }

    store
        .save_batch(
            &c,
            (0..20)
                .map(|i| {
                    (
                        format!("b{i:02}"),
                        json!({"n": i + 10, "kind": if i % 2 == 0 {"even"} else {"odd"}}),
                    )
                })
                .collect(),
        )
        .await
        .expect("save_batch");
    store.save(&other, "a", json!({"n": 99})).await.unwrap();

    let all = store
        .query(&Query {
            collection: c.clone(),
            ..Default::default()
        })
        .await
        .expect("query all");
    assert_eq!(all.len(), 21, "query returned {} of 21 values", all.len());

    let evens = store
        .query(&Query {
            collection: c.clone(),
            filter: json!({"kind": "even"}).as_object().unwrap().clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(evens.len(), 10, "filter returned {}", evens.len());
    assert!(
        evens.iter().all(|v| v["kind"] == "even"),
        "filter let others through"
    );

    let sorted = store
        .query(&Query {
            collection: c.clone(),
            sort: vec![SortField {
                field: "n".into(),
                descending: true,
            }],
            limit: Some(3),
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let ns: Vec<i64> = sorted.iter().map(|v| v["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [28, 27, 26], "sort/offset/limit gave {ns:?}");

    let none = store
        .query(&Query {
            collection: c.clone(),
            filter: json!({"kind": "absent"}).as_object().unwrap().clone(),
            ..Default::default()
        })
        .await
        .expect("[p92] a query matching nothing failed");
    assert!(
        none.is_empty(),
        "[p92] a query matching nothing returned values"
    );

    store.delete(&c, "a").await.expect("delete");
    assert!(store.load(&c, "a").await.is_err(), "delete left the value");
    store
        .delete(&c, "a")
        .await
        .expect("deleting a missing key is Ok");
    assert_eq!(
        store.load(&other, "a").await.unwrap(),
        json!({"n": 99}),
        "collections are not isolated"
    );
}

//! The LockService suite (seed properties 73 and 98; DESIGN.md's lease semantics).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::eventually;
use crate::error::Error;
use crate::lock::{LockOutcome, LockService};
use crate::resource::ResourceKey;

/// Runs every lock check on keys under `prefix`. `short_ttl` must be long enough for one
/// round trip and short enough to wait out (e.g. 300 ms).
pub async fn lock_conformance(locks: &dyn LockService, prefix: &str, short_ttl: Duration) {
    let key = |n: &str| -> ResourceKey { format!("{prefix}/{n}").parse().expect("valid key") };
    let long = Duration::from_secs(30);
    let granted = |o: LockOutcome, what: &str| match o {
        LockOutcome::Granted(g) => g,
        LockOutcome::Held { holder, .. } => panic!("{what}: expected a grant, held by {holder}"),
    };

    // A free key is granted; a second holder is told who holds it.
    let a = key("a");
    let g1 = granted(
        locks.acquire(&a, "exec-1", long).await.expect("acquire"),
        "free key",
    );
    match locks
        .acquire(&a, "exec-2", long)
        .await
        .expect("acquire held")
    {
        LockOutcome::Held { holder, until } => {
            assert_eq!(holder, "exec-1", "[p73] held by the wrong holder");
            assert!(until.is_some(), "[p73] a lease's expiry is not reported");
        }
        LockOutcome::Granted(_) => panic!("[p73] two holders were granted one key"),
    }
    let info = locks.lock_info(&a).await.expect("lock_info");
    assert_eq!(
        info.lease.as_ref().map(|l| l.token),
        Some(g1.token),
        "lock_info lost the lease"
    );

    // Release needs the right token; a wrong one changes nothing.
    let wrong = crate::lock::FencingToken(g1.token.0 + 1000);
    match locks.release(&a, wrong).await {
        Err(e) => assert!(
            matches!(e.root(), Error::Conflict { .. }),
            "wrong-token release: {e}"
        ),
        Ok(()) => panic!("release with a wrong token was accepted"),
    }
    assert!(
        locks.lock_info(&a).await.unwrap().lease.is_some(),
        "a wrong-token release freed the key"
    );
    // A refusal names who holds the key and with which token.
    let refused = locks
        .renew(&a, wrong, long)
        .await
        .expect_err("renew with a wrong token was accepted")
        .chain_message();
    assert!(
        refused.contains("exec-1") && refused.contains(&g1.token.to_string()),
        "the refusal does not name the current holder and token: {refused}"
    );
    locks
        .release(&a, g1.token)
        .await
        .expect("release with the right token");
    assert!(
        locks.lock_info(&a).await.unwrap().lease.is_none(),
        "release did not free the key"
    );
    locks
        .release(&a, g1.token)
        .await
        .expect("a retried release is accepted");

    // Tokens only grow.
    let g2 = granted(
        locks.acquire(&a, "exec-2", long).await.unwrap(),
        "released key",
    );
    assert!(
        g2.token > g1.token,
        "[p98] token did not grow: {} then {}",
        g1.token,
        g2.token
    );
    let renewed = locks.renew(&a, g2.token, long).await.expect("renew");
    assert_eq!(renewed.token, g2.token, "renew changed the token");
    assert!(
        renewed.expires_at >= g2.expires_at,
        "renew moved expiry back"
    );
    locks.release(&a, g2.token).await.unwrap();

    // An expired lease can be taken by another holder, and its old token is dead.
    let b = key("b");
    let g3 = granted(
        locks.acquire(&b, "exec-3", short_ttl).await.unwrap(),
        "free key b",
    );
    let g4 = eventually(short_ttl * 20, "expired lease taken over", || async {
        match locks.acquire(&b, "exec-4", long).await.ok()? {
            LockOutcome::Granted(g) => Some(g),
            LockOutcome::Held { .. } => None,
        }
    })
    .await;
    assert!(g4.token > g3.token, "[p98] takeover token did not grow");
    assert!(
        locks.renew(&b, g3.token, long).await.is_err(),
        "renew of an expired, taken lease succeeded"
    );
    assert!(
        locks.release(&b, g3.token).await.is_err(),
        "release with a superseded token succeeded"
    );
    locks.release(&b, g4.token).await.unwrap();

    // An operator hold blocks every acquire until it is lifted.
    let c = key("c");
    locks.hold(&c, "alice", "maintenance").await.expect("hold");
    match locks.acquire(&c, "exec-5", long).await.unwrap() {
        LockOutcome::Held { until, .. } => {
            assert!(until.is_none(), "an operator hold reported an expiry")
        }
        LockOutcome::Granted(_) => panic!("acquire succeeded on a held resource"),
    }
    assert!(
        locks.lock_info(&c).await.unwrap().hold.is_some(),
        "lock_info lost the hold"
    );
    locks.unhold(&c).await.expect("unhold");
    let g5 = granted(
        locks.acquire(&c, "exec-5", long).await.unwrap(),
        "unheld key",
    );
    // A hold placed on a leased key stops its holder: renewals are refused (the holder stops
    // acting when its safe window closes), until the hold is lifted.
    locks.hold(&c, "alice", "incident").await.expect("hold");
    match locks.renew(&c, g5.token, long).await {
        Err(e) => assert!(
            matches!(e.root(), Error::Conflict { .. }) && e.chain_message().contains("alice"),
            "a renewal under a hold was refused without naming the hold: {e}"
        ),
        Ok(g) => panic!("the holder renewed under an operator hold: {g:?}"),
    }
    locks.unhold(&c).await.expect("unhold");
    locks
        .renew(&c, g5.token, long)
        .await
        .expect("renew once the hold is lifted");
    locks.release(&c, g5.token).await.unwrap();

    // A waiting acquire is handed the lease when the holder releases it during the wait.
    let d = key("d");
    let no_cancel = CancellationToken::new();
    let g6 = granted(
        locks.acquire(&d, "exec-6", long).await.unwrap(),
        "free key d",
    );
    let (waited, released) = tokio::join!(
        locks.acquire_wait(&d, "exec-7", long, Duration::from_secs(20), &no_cancel),
        async {
            // Released once the waiter is (very likely) waiting; either order must work.
            tokio::time::sleep(short_ttl / 4).await;
            locks.release(&d, g6.token).await
        }
    );
    released.expect("release while another waits");
    let g7 = granted(waited.expect("acquire_wait"), "a wait through a release");
    assert_eq!(g7.holder, "exec-7", "the lease went to the wrong holder");
    assert!(
        g7.token > g6.token,
        "[p98] a handed-over token did not grow"
    );
    // The releaser's retry (its answer was lost) is told the release took effect.
    locks
        .release(&d, g6.token)
        .await
        .expect("a retried release after a hand-off is accepted");
    assert_eq!(
        locks.lock_info(&d).await.unwrap().lease.map(|l| l.token),
        Some(g7.token),
        "a retried release took the lease from the waiter it was handed to"
    );
    // A wait that runs out answers who holds the key.
    match locks
        .acquire_wait(&d, "exec-8", long, short_ttl / 2, &no_cancel)
        .await
        .expect("acquire_wait on a held key")
    {
        LockOutcome::Held { holder, until } => {
            assert_eq!(holder, "exec-7", "[p73] held by the wrong holder");
            assert!(until.is_some(), "[p73] a lease's expiry is not reported");
        }
        LockOutcome::Granted(_) => panic!("[p73] a waiter was granted a key still leased"),
    }
    // A canceled wait ends at once and leaves the queue: the release that follows hands the
    // key to nobody.
    let cancel = CancellationToken::new();
    let (canceled, ()) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(10),
            locks.acquire_wait(&d, "exec-10", long, Duration::from_secs(60), &cancel),
        ),
        async {
            tokio::time::sleep(short_ttl / 4).await;
            cancel.cancel();
        }
    );
    match canceled
        .expect("a canceled wait went on")
        .expect("acquire_wait")
    {
        LockOutcome::Held { holder, .. } => assert_eq!(holder, "exec-7"),
        LockOutcome::Granted(g) => panic!("a canceled waiter was granted {g:?}"),
    }
    locks.release(&d, g7.token).await.unwrap();
    assert!(
        locks.lock_info(&d).await.unwrap().lease.is_none(),
        "a canceled waiter stayed in the queue and was handed the lease"
    );
    // An operator hold is answered at once, not waited out.
    locks.hold(&d, "alice", "maintenance").await.unwrap();
    let held = tokio::time::timeout(
        Duration::from_secs(10),
        locks.acquire_wait(&d, "exec-9", long, Duration::from_secs(60), &no_cancel),
    )
    .await
    .expect("a wait under an operator hold did not answer at once")
    .unwrap();
    assert!(
        matches!(held, LockOutcome::Held { until: None, .. }),
        "an operator hold was not reported as such: {held:?}"
    );
    locks.unhold(&d).await.unwrap();

    // Bad input is refused.
    assert!(
        locks.acquire(&c, "", long).await.is_err(),
        "an empty holder was accepted"
    );
    assert!(
        locks.acquire(&c, "x", Duration::ZERO).await.is_err(),
        "a zero ttl was accepted"
    );
}

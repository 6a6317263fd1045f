//! Execution strategies (seed properties 22, 27, 64, 65) and the worker pool (23, 95).

mod engine_common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_common::{Probe, Rig};
use ire_actors::engine::{CircuitBreakerStrategy, CircuitState, RateLimitStrategy, RetryStrategy};
use ire_core::testsuite::{CountingStrategy, FakePlugin, Hook};
use ire_core::{
    Attempt, Error, ErrorClass, ExecutionEngine, ExecutionResult, ExecutionStatus,
    ExecutionStrategy, Result,
};
use proptest::prelude::*;

/// A plugin whose execute records the (paused) time of each call.
fn timed_failures(rig: &Rig, name: &str, class: ErrorClass, times: u32) -> FakePlugin {
    let p = FakePlugin::new(name);
    p.fail(Hook::Execute, class, times);
    let _ = rig;
    p
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_and_only_on_retryable_errors() {
    let rig = Rig::new().await;
    let p = timed_failures(&rig, "flaky", ErrorClass::Retryable, 3);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let start = tokio::time::Instant::now();
    let req = rig
        .request("flaky", &r)
        .with_strategy(Arc::new(RetryStrategy::exponential(5)));
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Success, "{res:?}");
    assert_eq!(res.attempts, 4);
    // 1 s + 2 s + 4 s of backoff, on paused time.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // Each attempt is a full lifecycle: rolled back and cleaned up after each failure.
    assert_eq!(p.count(Hook::Execute), 4);
    assert_eq!(p.count(Hook::Cleanup), 4);
    assert_eq!(p.count(Hook::Rollback), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_max_retries() {
    let rig = Rig::new().await;
    let p = timed_failures(&rig, "down", ErrorClass::Retryable, 100);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let req = rig
        .request("down", &r)
        .with_strategy(Arc::new(RetryStrategy::exponential(2)));
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(res.attempts, 3);
    assert_eq!(res.error_class, Some(ErrorClass::Retryable));
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_abort_at_once_and_clean_up() {
    let rig = Rig::new().await;
    let p = timed_failures(&rig, "broken", ErrorClass::Fatal, 100);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let start = tokio::time::Instant::now();
    let req = rig
        .request("broken", &r)
        .with_strategy(Arc::new(RetryStrategy::exponential(5)));
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(res.attempts, 1);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(p.count(Hook::Cleanup), 1);
}

#[tokio::test(start_paused = true)]
async fn canceling_during_a_backoff_ends_the_execution() {
    let rig = Rig::new().await;
    let p = timed_failures(&rig, "flaky", ErrorClass::Retryable, 100);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let req = rig
        .request("flaky", &r)
        .with_strategy(Arc::new(RetryStrategy::exponential(10)));
    let mut h = rig.engine.execute_async(req).await.unwrap();
    // Let the first attempt fail and the strategy sleep.
    ire_core::testsuite::eventually(Duration::from_secs(5), "first attempt", || async {
        (p.count(Hook::Cleanup) == 1).then_some(())
    })
    .await;
    h.cancel();
    let res = h.wait().await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Canceled);
    assert_eq!(p.count(Hook::Execute), 1);
}

#[tokio::test]
async fn the_requested_strategy_is_the_one_applied() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let counting = Arc::new(CountingStrategy::default());
    let req = rig.request("fake", &r).with_strategy(counting.clone());
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(counting.uses(), 1);
    assert_eq!(res.metadata["strategy"], serde_json::json!(counting.name()));
}

/// A custom strategy written outside the engine: runs the attempt twice, keeps the last.
struct Twice(AtomicU32);

#[async_trait]
impl ExecutionStrategy for Twice {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let _ = attempt.run().await;
        attempt.run().await
    }
    fn name(&self) -> &str {
        "twice"
    }
}

#[tokio::test]
async fn custom_strategies_plug_in_without_engine_changes() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let s = Arc::new(Twice(AtomicU32::new(0)));
    let res = rig
        .engine
        .execute(rig.request("fake", &r).with_strategy(s.clone()))
        .await
        .unwrap();
    assert_eq!(res.attempts, 2);
    assert_eq!(p.count(Hook::Execute), 2);
    assert_eq!(res.metadata["strategy"], serde_json::json!("twice"));
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_opens_refuses_then_half_opens() {
    let rig = Rig::new().await;
    let p = timed_failures(&rig, "down", ErrorClass::Retryable, 3);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let cb = Arc::new(CircuitBreakerStrategy::new(
        3,
        None,
        Duration::from_secs(30),
    ));
    let run = || {
        rig.engine
            .execute(rig.request("down", &r).with_strategy(cb.clone()))
    };
    for _ in 0..3 {
        assert_eq!(run().await.unwrap().status, ExecutionStatus::Failed);
    }
    assert_eq!(cb.state(), CircuitState::Open);
    // Open: refused without calling the plugin.
    let refused = run().await.unwrap();
    assert_eq!(refused.status, ExecutionStatus::Failed);
    assert!(refused.error.unwrap().contains("circuit open"));
    assert_eq!(p.count(Hook::Execute), 3);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    // The trial succeeds (the plugin stopped failing): closed again.
    assert_eq!(run().await.unwrap().status, ExecutionStatus::Success);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_attempts() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let rl = Arc::new(RateLimitStrategy::new(2, 1));
    let start = tokio::time::Instant::now();
    for _ in 0..5 {
        let res = rig
            .engine
            .execute(rig.request("fake", &r).with_strategy(rl.clone()))
            .await
            .unwrap();
        assert!(res.is_success());
    }
    // 2 per second with a burst of 1: the 5th starts 2 s after the first.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1990) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[tokio::test]
async fn full_queue_is_rejected_with_overloaded_and_audited() {
    let mut opts = engine_common::RigOptions::default();
    opts.config.concurrency_limit = 1;
    opts.config.queue_capacity = 1;
    let rig = Rig::with(opts).await;
    let p = Probe::new("probe", Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let a = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    let b = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    let e = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Overloaded { .. }), "{e}");
    assert!(e.is_retryable());
    let audit = rig.audit.entries();
    assert!(audit
        .iter()
        .any(|x| !x.result.success && x.result.error.contains("overloaded")));
    a.cancel();
    b.cancel();
}

#[tokio::test]
async fn concurrency_limit_can_be_raised_while_running() {
    let mut opts = engine_common::RigOptions::default();
    opts.config.concurrency_limit = 1;
    let rig = Rig::with(opts).await;
    let p = Probe::new("probe", Duration::from_millis(300));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut hs = Vec::new();
    for _ in 0..4 {
        hs.push(
            rig.engine
                .execute_async(rig.request("probe", &r))
                .await
                .unwrap(),
        );
    }
    rig.engine.set_concurrency_limit(4).await.unwrap();
    for mut h in hs {
        assert!(h.wait().await.unwrap().is_success());
    }
    assert!(p.max() >= 2, "raised limit not used: {}", p.max());
    assert!(rig.engine.set_concurrency_limit(0).await.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Property 23: however many executions are submitted, at most `limit` run at once,
    /// and every one completes.
    #[test]
    fn concurrency_limit_is_never_exceeded(limit in 1usize..6, n in 1usize..24) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let mut opts = engine_common::RigOptions::default();
            opts.config.concurrency_limit = limit;
            let rig = Rig::with(opts).await;
            let p = Probe::new("probe", Duration::from_millis(5));
            rig.register(Arc::new(p.clone())).await;
            let r = rig.resource("db");
            let mut hs = Vec::new();
            for _ in 0..n {
                hs.push(rig.engine.execute_async(rig.request("probe", &r)).await.unwrap());
            }
            for mut h in hs {
                prop_assert!(h.wait().await.unwrap().is_success());
            }
            prop_assert!(p.max() <= limit, "{} ran at once with limit {}", p.max(), limit);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_batch_is_admitted_in_order_up_to_the_queue_and_the_rest_rejected() {
    let mut opts = engine_common::RigOptions::default();
    opts.config.concurrency_limit = 2;
    opts.config.queue_capacity = 3;
    let rig = Rig::with(opts).await;
    let p = Probe::new("probe", Duration::from_millis(50));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut reqs: Vec<_> = (0..7).map(|_| rig.request("probe", &r)).collect();
    reqs[1].plugin_name = "missing".into();
    let answers = rig.engine.execute_many(reqs).await;
    assert_eq!(answers.len(), 7);
    assert!(matches!(answers[1], Err(Error::NotFound { .. })));
    // 2 run + 3 queue: the 6 valid requests admit 5, and the last is rejected.
    let ok: Vec<usize> = (0..7).filter(|&i| answers[i].is_ok()).collect();
    assert_eq!(ok, [0, 2, 3, 4, 5]);
    assert!(matches!(answers[6], Err(Error::Overloaded { .. })));
    for a in answers.into_iter().flatten() {
        let mut h = a;
        assert!(h.wait().await.unwrap().is_success());
    }
    assert!(p.max() <= 2);
    assert!(rig
        .audit
        .entries()
        .iter()
        .any(|e| e.result.error.contains("overloaded")));
}

//! The live `min-available` guard of a target while a campaign runs.
//!
//! The plan checks the guard once, when a step's resources are chosen. Health changes
//! afterwards (a resource fails on its own, an earlier fault is still recovering), so each
//! task is admitted again just before its fault is injected: under the guard's lock, the
//! health of every resource of the target is read *now*; a resource counts as available
//! when it is healthy and no fault of this campaign is on it or still recovering from it. A
//! fault on a healthy resource is admitted only if the available ones left would stay at or
//! above `min-available`.
//!
//! A resource stays counted as faulted from its admission until it has been seen healthy
//! after its task ended, so a killed resource that the monitor has not seen fail yet, or
//! that is restarting, is never counted as available.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;
use ire_core::{Monitor, Resource};
use tokio::sync::Mutex;

use super::plan::Exclusion;

/// Where the guard reads health from.
#[async_trait]
pub trait HealthSource: Send + Sync {
    /// True when the resource is healthy now (an error counts as not healthy).
    async fn healthy(&self, resource: &Resource) -> bool;
}

/// Health through the node's monitor.
pub struct MonitorHealth(pub Arc<dyn Monitor>);

#[async_trait]
impl HealthSource for MonitorHealth {
    async fn healthy(&self, resource: &Resource) -> bool {
        let check = self.0.check_health(resource);
        match tokio::time::timeout(std::time::Duration::from_secs(10), check).await {
            Ok(Ok(h)) => h.is_healthy(),
            _ => false,
        }
    }
}

/// One admission decision, as the guard saw it (for tests and the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The resource asked for.
    pub key: String,
    /// Healthy and unfaulted resources before the decision.
    pub available: usize,
    /// Whether the resource itself was healthy.
    pub healthy: bool,
    /// Admitted or not.
    pub admitted: bool,
}

#[derive(Default)]
struct State {
    /// Admitted and not ended, with how many tasks (two steps may fault one resource, one
    /// after the other under its lease).
    in_flight: BTreeMap<String, usize>,
    /// Ended, not yet seen healthy again.
    recovering: BTreeSet<String>,
}

/// The guard of one target (shared by every step on it).
pub struct LiveGuard {
    min_available: usize,
    members: BTreeMap<String, Arc<Resource>>,
    health: Arc<dyn HealthSource>,
    state: Mutex<State>,
}

impl LiveGuard {
    /// A guard keeping `min_available` of `members` healthy and unfaulted.
    pub fn new(
        min_available: usize,
        members: impl IntoIterator<Item = Arc<Resource>>,
        health: Arc<dyn HealthSource>,
    ) -> Self {
        LiveGuard {
            min_available,
            members: members
                .into_iter()
                .map(|r| (r.key.to_string(), r))
                .collect(),
            health,
            state: Mutex::new(State::default()),
        }
    }

    /// The minimum kept.
    pub fn min_available(&self) -> usize {
        self.min_available
    }

    /// Adds resources (a later step may see more of the target than the first did).
    pub fn extend(&mut self, members: impl IntoIterator<Item = Arc<Resource>>) {
        for r in members {
            self.members.entry(r.key.to_string()).or_insert(r);
        }
    }

    /// Admits a fault on `resource`, or says why not.
    pub async fn admit(&self, resource: &Resource) -> Result<Decision, Exclusion> {
        let key = resource.key.to_string();
        let mut state = self.state.lock().await;
        if self.min_available == 0 {
            *state.in_flight.entry(key.clone()).or_default() += 1;
            return Ok(Decision {
                key,
                available: 0,
                healthy: true,
                admitted: true,
            });
        }
        let mut members: Vec<Arc<Resource>> = self.members.values().cloned().collect();
        if !self.members.contains_key(&key) {
            members.push(Arc::new(resource.clone()));
        }
        let checks = members.iter().map(|r| self.health.healthy(r));
        let health: BTreeMap<String, bool> = members
            .iter()
            .map(|r| r.key.to_string())
            .zip(join_all(checks).await)
            .collect();
        // A recovering resource seen healthy has recovered.
        state
            .recovering
            .retain(|k| !health.get(k).copied().unwrap_or(false));
        let available = health
            .iter()
            .filter(|(k, h)| {
                **h && !state.in_flight.contains_key(*k) && !state.recovering.contains(*k)
            })
            .count();
        let healthy = health.get(&key).copied().unwrap_or(false);
        let counts =
            healthy && !state.recovering.contains(&key) && !state.in_flight.contains_key(&key);
        if counts && available <= self.min_available {
            return Err(Exclusion::Guard {
                available,
                min_available: self.min_available,
            });
        }
        *state.in_flight.entry(key.clone()).or_default() += 1;
        Ok(Decision {
            key,
            available,
            healthy,
            admitted: true,
        })
    }

    /// The fault on `resource` ended: it counts as faulted until seen healthy again.
    pub async fn release(&self, resource: &Resource) {
        let key = resource.key.to_string();
        let mut state = self.state.lock().await;
        if Self::end(&mut state, &key) && self.min_available > 0 {
            state.recovering.insert(key);
        }
    }

    /// Counts one task on `key` out; true when it was the last.
    fn end(state: &mut State, key: &str) -> bool {
        match state.in_flight.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                state.in_flight.remove(key);
                true
            }
            None => false,
        }
    }

    /// A task that was admitted but never injected: it leaves no fault to recover from.
    pub async fn cancel(&self, resource: &Resource) {
        let mut state = self.state.lock().await;
        Self::end(&mut state, resource.key.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::testsuite::ResourceBuilder;
    use proptest::prelude::*;
    use std::sync::Mutex as StdMutex;

    /// Health in a map the test flips.
    #[derive(Default)]
    struct Flags(StdMutex<BTreeMap<String, bool>>);

    #[async_trait]
    impl HealthSource for Flags {
        async fn healthy(&self, r: &Resource) -> bool {
            *self.0.lock().unwrap().get(r.key.as_str()).unwrap_or(&false)
        }
    }

    fn members(n: usize) -> Vec<Arc<Resource>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    ResourceBuilder::new(&format!("svc-{i}"))
                        .key(&format!("local/svc-{i}"))
                        .build(),
                )
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Flip(usize),
        Admit(usize),
        End(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..n).prop_map(Op::Flip),
            (0..n).prop_map(Op::Admit),
            (0..n).prop_map(Op::End),
        ]
    }

    proptest! {
        /// Whatever the interleaving of health changes, admissions and ends, every admitted
        /// fault on a healthy resource leaves at least min-available resources healthy and
        /// unfaulted at the moment it is admitted, and a resource is never admitted twice at
        /// once.
        #[test]
        fn min_available_holds_at_every_admission(
            n in 1usize..12,
            min in 0usize..12,
            ops in proptest::collection::vec(op(12), 1..120),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let flags = Arc::new(Flags::default());
                let ms = members(n);
                for r in &ms {
                    flags.0.lock().unwrap().insert(r.key.to_string(), true);
                }
                let guard = LiveGuard::new(min, ms.clone(), flags.clone());
                // The test's own model of what is faulted or recovering.
                let mut faulted: BTreeSet<usize> = BTreeSet::new();
                let mut recovering: BTreeSet<usize> = BTreeSet::new();
                for o in ops {
                    match o {
                        Op::Flip(i) if i < n => {
                            let mut f = flags.0.lock().unwrap();
                            let v = f.get_mut(ms[i].key.as_str()).unwrap();
                            *v = !*v;
                        }
                        Op::Admit(i) if i < n && !faulted.contains(&i) => {
                            let healthy_now: Vec<bool> = ms.iter().map(|r| flags.0.lock().unwrap()[r.key.as_str()]).collect();
                            recovering.retain(|j| !healthy_now[*j]);
                            if guard.admit(&ms[i]).await.is_ok() {
                                let available_after = (0..n)
                                    .filter(|j| healthy_now[*j] && !faulted.contains(j) && !recovering.contains(j) && *j != i)
                                    .count();
                                if healthy_now[i] && !recovering.contains(&i) && min > 0 {
                                    prop_assert!(available_after >= min,
                                        "admitted {} leaving {} available, min {}", i, available_after, min);
                                }
                                faulted.insert(i);
                            }
                        }
                        Op::End(i) if faulted.remove(&i) => {
                            guard.release(&ms[i]).await;
                            if min > 0 { recovering.insert(i); }
                        }
                        _ => {}
                    }
                }
                Ok(())
            })?;
        }
    }

    /// Tasks admitted concurrently while another task flips health: no decision ever admits
    /// a healthy resource with min-available or fewer available.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_admissions_with_changing_health() {
        let n = 10;
        let min = 6;
        let flags = Arc::new(Flags::default());
        let ms = members(n);
        for r in &ms {
            flags.0.lock().unwrap().insert(r.key.to_string(), true);
        }
        let guard = Arc::new(LiveGuard::new(min, ms.clone(), flags.clone()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let flags = flags.clone();
            let ms = ms.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    {
                        let mut f = flags.0.lock().unwrap();
                        let v = f.get_mut(ms[i % n].key.as_str()).unwrap();
                        *v = !*v;
                    }
                    i = i.wrapping_mul(7).wrapping_add(3);
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut tasks = Vec::new();
        for r in ms.clone() {
            let guard = guard.clone();
            tasks.push(tokio::spawn(async move {
                let mut decisions = Vec::new();
                for _ in 0..50 {
                    match guard.admit(&r).await {
                        Ok(d) => {
                            decisions.push(d);
                            tokio::task::yield_now().await;
                            guard.cancel(&r).await;
                        }
                        Err(Exclusion::Guard {
                            available,
                            min_available,
                        }) => {
                            assert!(available <= min_available);
                        }
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
                decisions
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            for d in t.await.unwrap() {
                admitted += 1;
                if d.healthy {
                    assert!(d.available > min, "{d:?}");
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.await.unwrap();
        assert!(admitted > 0, "nothing was ever admitted");
    }
}

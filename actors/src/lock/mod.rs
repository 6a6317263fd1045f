//! The resource-lock actor: acquires a resource's lease (core's [`LockService`], replicated
//! by consensus), hands the [`FencingToken`] to the execution, renews the lease at a third of
//! its ttl while the execution or its timed fault lasts, and releases it after.
//!
//! If a renewal fails (the lease was lost: a partition, an expiry, a newer holder), the
//! lease's `lost` token is canceled; the engine cancels the execution and reverts its fault.
//! If the actor itself stops or crashes, every lease it was renewing is declared lost the
//! same way, because nothing renews it any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ire_core::{Error, FencingToken, LeaseGrant, LockOutcome, LockService, ResourceKey, Result};
use ractor::{Actor, ActorProcessingErr, ActorRef, Message, SpawnErr};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::metric_names;
use crate::supervisor::{ActorSlot, ChildSpec, PingFn, SpawnedChild};

/// How leases are taken and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// A lease's time to live; renewed every `ttl / 3`.
    pub ttl: Duration,
    /// The first wait between tries when the lock service answered before the wait was over
    /// (it was unavailable, or the actor restarted); a held lease is waited for in the
    /// service itself ([`LockService::acquire_wait`]).
    pub poll_initial: Duration,
    /// The longest wait between tries.
    pub poll_max: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl: Duration::from_secs(15),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(500),
        }
    }
}

/// Messages of the resource-lock actor.
pub enum ResourceLockMessage {
    /// Takes a lease, waiting up to `wait` while someone else holds it (see
    /// [`LockService::acquire_wait`]).
    Acquire {
        /// The resource.
        key: ResourceKey,
        /// Who will hold it.
        holder: String,
        /// How long to wait for a holder's release (zero: try once).
        wait: Duration,
        /// Ends the wait early (the caller gave up).
        cancel: CancellationToken,
        /// The answer.
        reply: oneshot::Sender<Result<Acquired>>,
    },
    /// A lease was granted: start renewing it (sent by the actor to itself).
    Track {
        /// The grant.
        grant: LeaseGrant,
        /// The answer to the acquire.
        reply: oneshot::Sender<Result<Acquired>>,
    },
    /// Stops renewing a lease and gives it back.
    Release {
        /// The resource.
        key: ResourceKey,
        /// The lease's token.
        token: FencingToken,
        /// Told when the lease has been given back.
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A renewal failed: forget the lease (sent by the renewal task).
    Lost {
        /// The resource.
        key: ResourceKey,
        /// The lease's token.
        token: FencingToken,
    },
    /// The leases held, by key.
    Held(oneshot::Sender<Vec<(ResourceKey, FencingToken)>>),
    /// Heartbeat: answered at once by a healthy actor.
    Ping(oneshot::Sender<()>),
    /// Fails the actor on purpose, to exercise supervision (ire tests itself with chaos).
    Crash,
}

impl Message for ResourceLockMessage {}

/// The answer to one acquire attempt.
#[derive(Debug)]
pub enum Acquired {
    /// The lease is ours; `lost` is canceled if it can no longer be renewed.
    Granted {
        /// The grant.
        grant: LeaseGrant,
        /// Canceled when the lease is lost.
        lost: CancellationToken,
    },
    /// Someone else holds it.
    Held {
        /// Who.
        holder: String,
        /// Until when (None: an operator hold).
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

struct Lease {
    token: FencingToken,
    /// Stops the renewal task (a release).
    stop: CancellationToken,
}

/// The actor's state.
pub struct LockState {
    leases: HashMap<ResourceKey, Lease>,
    root: CancellationToken,
    tasks: TaskTracker,
    /// Cancels `root` when the state is dropped, which is also what happens on a panic.
    _guard: DropGuard,
}

/// What a lock actor incarnation starts with.
#[derive(Clone)]
pub struct LockArgs {
    service: Arc<dyn LockService>,
    config: LockConfig,
}

/// The resource-lock actor. It keeps its service and config in itself (ractor hands
/// `Arguments` to `pre_start` only), so every incarnation the supervisor starts has them.
#[derive(Clone)]
pub struct ResourceLockActor {
    args: LockArgs,
}

impl Actor for ResourceLockActor {
    type Msg = ResourceLockMessage;
    type State = LockState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let root = CancellationToken::new();
        Ok(LockState {
            leases: HashMap::new(),
            _guard: root.clone().drop_guard(),
            root,
            tasks: TaskTracker::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // Nothing will renew these leases any more: their executions must stop and revert.
        state.root.cancel();
        state.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), state.tasks.wait()).await;
        metrics::gauge!(metric_names::LOCK_HELD).set(0.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let service = self.args.service.clone();
        match message {
            ResourceLockMessage::Acquire {
                key,
                holder,
                wait,
                cancel,
                reply,
            } => {
                let ttl = self.args.config.ttl;
                let me = myself.clone();
                state.tasks.spawn(async move {
                    let outcome = if wait.is_zero() {
                        service.acquire(&key, &holder, ttl).await
                    } else {
                        service
                            .acquire_wait(&key, &holder, ttl, wait, &cancel)
                            .await
                    };
                    match outcome {
                        Ok(LockOutcome::Granted(grant)) => {
                            // The actor died between the grant and tracking it: give the
                            // lease back rather than leave it until it expires.
                            if let Err(ractor::MessagingErr::SendErr(
                                ResourceLockMessage::Track { grant, reply },
                            )) = me.cast(ResourceLockMessage::Track { grant, reply })
                            {
                                {
                                    let _ = service.release(&grant.key, grant.token).await;
                                    let _ = reply.send(Err(Error::Unavailable {
                                        message: "the resource-lock actor stopped".into(),
                                        source: None,
                                    }));
                                }
                            }
                        }
                        Ok(LockOutcome::Held { holder, until }) => {
                            let _ = reply.send(Ok(Acquired::Held { holder, until }));
                        }
                        Err(e) => {
                            let _ =
                                reply.send(Err(e.context(format!("acquiring the lease on {key}"))));
                        }
                    }
                });
            }
            ResourceLockMessage::Track { grant, reply } => {
                let lost = state.root.child_token();
                let stop = lost.child_token();
                if let Some(old) = state.leases.insert(
                    grant.key.clone(),
                    Lease {
                        token: grant.token,
                        stop: stop.clone(),
                    },
                ) {
                    // A re-grant to the same holder replaces the old renewal.
                    old.stop.cancel();
                }
                metrics::counter!(metric_names::LOCK_ACQUIRED_TOTAL).increment(1);
                metrics::gauge!(metric_names::LOCK_HELD).set(state.leases.len() as f64);
                state.tasks.spawn(renew_until_stopped(
                    service,
                    myself.clone(),
                    grant.clone(),
                    self.args.config.ttl,
                    stop,
                    lost.clone(),
                ));
                if reply
                    .send(Ok(Acquired::Granted {
                        grant: grant.clone(),
                        lost,
                    }))
                    .is_err()
                {
                    // The asker gave up (canceled) meanwhile: release at once.
                    let _ = myself.cast(ResourceLockMessage::Release {
                        key: grant.key,
                        token: grant.token,
                        reply: None,
                    });
                }
            }
            ResourceLockMessage::Release { key, token, reply } => {
                if state.leases.get(&key).is_some_and(|l| l.token == token) {
                    if let Some(l) = state.leases.remove(&key) {
                        l.stop.cancel();
                    }
                }
                metrics::gauge!(metric_names::LOCK_HELD).set(state.leases.len() as f64);
                // Released at the service even when this incarnation never tracked it (the
                // lease was taken before a restart).
                state.tasks.spawn(async move {
                    let r = service.release(&key, token).await;
                    if let Err(e) = &r {
                        tracing::warn!(component = "resource-lock", resource_id = %key, token = token.0, error = %e, "release failed; the lease will expire");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                });
            }
            ResourceLockMessage::Lost { key, token } => {
                if state.leases.get(&key).is_some_and(|l| l.token == token) {
                    state.leases.remove(&key);
                }
                metrics::gauge!(metric_names::LOCK_HELD).set(state.leases.len() as f64);
            }
            ResourceLockMessage::Held(reply) => {
                let _ = reply.send(
                    state
                        .leases
                        .iter()
                        .map(|(k, l)| (k.clone(), l.token))
                        .collect(),
                );
            }
            ResourceLockMessage::Ping(reply) => {
                let _ = reply.send(());
            }
            ResourceLockMessage::Crash => panic!("resource-lock actor crashed on request"),
        }
        Ok(())
    }
}

async fn renew_until_stopped(
    service: Arc<dyn LockService>,
    actor: ActorRef<ResourceLockMessage>,
    grant: LeaseGrant,
    ttl: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_millis(1));
    let mut expires = tokio::time::Instant::now() + ttl;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut attempt = 0u32;
        loop {
            match service.renew(&grant.key, grant.token, ttl).await {
                Ok(_) => {
                    metrics::counter!(metric_names::LOCK_RENEWALS_TOTAL, "outcome" => "ok")
                        .increment(1);
                    expires = tokio::time::Instant::now() + ttl;
                    break;
                }
                Err(e) => {
                    metrics::counter!(metric_names::LOCK_RENEWALS_TOTAL, "outcome" => "failed")
                        .increment(1);
                    attempt += 1;
                    let retry_in = every / 4;
                    // A transient failure is retried while the lease is still valid.
                    if e.is_retryable()
                        && !matches!(e.root(), Error::Conflict { .. })
                        && tokio::time::Instant::now() + retry_in < expires
                    {
                        tracing::debug!(component = "resource-lock", resource_id = %grant.key, attempt, error = %e, "renewal failed; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(retry_in) => continue,
                        }
                    }
                    if stop.is_cancelled() {
                        return;
                    }
                    tracing::error!(component = "resource-lock", resource_id = %grant.key, token = grant.token.0, error = %e, "lease lost");
                    metrics::counter!(metric_names::LOCK_LOST_TOTAL).increment(1);
                    lost.cancel();
                    let _ = actor.cast(ResourceLockMessage::Lost {
                        key: grant.key.clone(),
                        token: grant.token,
                    });
                    return;
                }
            }
        }
    }
}

/// A handle on the resource-lock actor, cloneable, surviving its restarts.
#[derive(Clone)]
pub struct LockManager {
    args: LockArgs,
    slot: ActorSlot<ResourceLockMessage>,
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("config", &self.args.config)
            .field("slot", &self.slot)
            .finish()
    }
}

/// A held lease. Release it with [`LeaseGuard::release`]; dropping it releases it in the
/// background.
#[derive(Debug)]
pub struct LeaseGuard {
    key: ResourceKey,
    token: FencingToken,
    lost: CancellationToken,
    manager: Option<LockManager>,
}

impl LeaseGuard {
    /// The lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The locked resource.
    pub fn key(&self) -> &ResourceKey {
        &self.key
    }

    /// Canceled when the lease can no longer be renewed.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Gives the lease back and waits until the lock service has it.
    pub async fn release(mut self) -> Result<()> {
        let manager = self.manager.take().expect("released once");
        manager.release(&self.key, self.token).await
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(m) = self.manager.take() {
            if let Ok(a) = m.slot.get() {
                let _ = a.cast(ResourceLockMessage::Release {
                    key: self.key.clone(),
                    token: self.token,
                    reply: None,
                });
            } else {
                let service = m.args.service.clone();
                let (key, token) = (self.key.clone(), self.token);
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = service.release(&key, token).await;
                    });
                }
            }
        }
    }
}

impl LockManager {
    /// A manager for `service`; start its actor with [`LockManager::spawn`] or put
    /// [`LockManager::child_spec`] in a supervisor.
    pub fn new(service: Arc<dyn LockService>, config: LockConfig) -> Self {
        LockManager {
            args: LockArgs { service, config },
            slot: ActorSlot::new("resource-lock"),
        }
    }

    /// The lock config.
    pub fn config(&self) -> &LockConfig {
        &self.args.config
    }

    /// The lock service.
    pub fn service(&self) -> &Arc<dyn LockService> {
        &self.args.service
    }

    /// The slot of the current actor.
    pub fn slot(&self) -> &ActorSlot<ResourceLockMessage> {
        &self.slot
    }

    async fn spawn_into(
        &self,
        supervisor: Option<ractor::ActorCell>,
    ) -> std::result::Result<SpawnedChild, SpawnErr> {
        let actor = ResourceLockActor {
            args: self.args.clone(),
        };
        let (a, _join) = match supervisor {
            Some(s) => Actor::spawn_linked(None, actor, (), s).await?,
            None => Actor::spawn(None, actor, ()).await?,
        };
        self.slot.set(a.clone());
        let ping: PingFn = Arc::new(move || {
            let a = a.clone();
            Box::pin(async move {
                let (tx, rx) = oneshot::channel();
                a.cast(ResourceLockMessage::Ping(tx)).is_ok() && rx.await.is_ok()
            })
        });
        Ok(SpawnedChild {
            cell: self
                .slot
                .get()
                .map_err(|e| SpawnErr::StartupFailed(e.to_string().into()))?
                .get_cell(),
            ping: Some(ping),
        })
    }

    /// Starts the actor unsupervised (tests, tools).
    pub async fn spawn(&self) -> Result<()> {
        self.spawn_into(None).await.map(|_| ()).map_err(|e| {
            Error::other(
                ire_core::ErrorClass::Fatal,
                format!("starting the resource-lock actor: {e}"),
                None,
            )
        })
    }

    /// The supervisor child that runs this manager's actor.
    pub fn child_spec(&self) -> ChildSpec {
        let me = self.clone();
        ChildSpec::new(
            "resource-lock",
            Arc::new(move |sup| {
                let me = me.clone();
                Box::pin(async move { me.spawn_into(Some(sup)).await })
            }),
        )
    }

    /// Stops the actor (leases it renewed are declared lost).
    pub async fn stop(&self) {
        if let Ok(a) = self.slot.get() {
            let _ = a.stop_and_wait(None, Some(Duration::from_secs(10))).await;
        }
        self.slot.clear();
    }

    /// Takes the lease on `key` for `holder`, waiting up to `wait` while someone else holds
    /// it. Fails with `Conflict` when the wait runs out or an operator holds the resource,
    /// with `Canceled` when `cancel` fires.
    pub async fn acquire(
        &self,
        key: &ResourceKey,
        holder: &str,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<LeaseGuard> {
        let start = tokio::time::Instant::now();
        let deadline = start + wait;
        let mut delay = self.args.config.poll_initial;
        loop {
            let tried = tokio::time::Instant::now();
            // The service waits for the holder's release, for the whole wait (and leaves the
            // key's queue when `cancel` fires); this loop polls, with a growing delay, only
            // after an answer that came early (the actor restarting, an unavailable service).
            let left = deadline.saturating_duration_since(tried);
            let attempt = match self.slot.get() {
                Ok(actor) => {
                    let (tx, rx) = oneshot::channel();
                    match actor.cast(ResourceLockMessage::Acquire {
                        key: key.clone(),
                        holder: holder.to_owned(),
                        wait: left,
                        cancel: cancel.clone(),
                        reply: tx,
                    }) {
                        // The actor's wait ends with `cancel` too; a grant that arrives as
                        // the caller leaves is released by the actor (its answer has no
                        // receiver any more).
                        Ok(()) => tokio::select! {
                            r = rx => r.unwrap_or_else(|_| {
                                Err(Error::Unavailable {
                                    message: "the resource-lock actor stopped during an acquire".into(),
                                    source: None,
                                })
                            }),
                            _ = cancel.cancelled() => return Err(Error::Canceled {
                                message: format!("waiting for the lease on {key}"),
                            }),
                        },
                        Err(_) => Err(Error::Unavailable {
                            message: "the resource-lock actor is not running".into(),
                            source: None,
                        }),
                    }
                }
                Err(e) => Err(e),
            };
            let waiting_on = match attempt {
                Ok(Acquired::Granted { grant, lost }) => {
                    metrics::histogram!(metric_names::LOCK_WAIT_SECONDS)
                        .record(start.elapsed().as_secs_f64());
                    return Ok(LeaseGuard {
                        key: grant.key,
                        token: grant.token,
                        lost,
                        manager: Some(self.clone()),
                    });
                }
                Ok(Acquired::Held {
                    holder: h,
                    until: None,
                }) => {
                    return Err(Error::Conflict {
                        message: format!("{key} is on hold by operator {h}"),
                    })
                }
                Ok(Acquired::Held { holder: h, .. }) => format!("held by {h}"),
                // The actor is restarting: wait for its next incarnation like for a holder.
                Err(e) if matches!(e.root(), Error::Unavailable { .. }) => e.to_string(),
                Err(e) => return Err(e),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Conflict {
                    message: format!(
                        "lease on {key} not obtained within {}: {waiting_on}",
                        humantime::format_duration(wait)
                    ),
                });
            }
            // The poll delay counts from the start of the attempt: a service that waited has
            // already spent it.
            let pause = delay.saturating_sub(now - tried).min(deadline - now);
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Canceled { message: format!("waiting for the lease on {key}") }),
                _ = tokio::time::sleep(pause) => {}
            }
            delay = (delay * 2).min(self.args.config.poll_max);
        }
    }

    /// Gives a lease back.
    pub async fn release(&self, key: &ResourceKey, token: FencingToken) -> Result<()> {
        match self.slot.get() {
            Ok(a) => {
                let (tx, rx) = oneshot::channel();
                if a.cast(ResourceLockMessage::Release {
                    key: key.clone(),
                    token,
                    reply: Some(tx),
                })
                .is_ok()
                {
                    if let Ok(r) = rx.await {
                        return r;
                    }
                }
                self.args.service.release(key, token).await
            }
            Err(_) => self.args.service.release(key, token).await,
        }
    }

    /// The leases this node holds.
    pub async fn held(&self) -> Result<Vec<(ResourceKey, FencingToken)>> {
        let a = self.slot.get()?;
        let (tx, rx) = oneshot::channel();
        a.cast(ResourceLockMessage::Held(tx))
            .map_err(|_| Error::Unavailable {
                message: "the resource-lock actor is not running".into(),
                source: None,
            })?;
        rx.await.map_err(|_| Error::Unavailable {
            message: "the resource-lock actor stopped".into(),
            source: None,
        })
    }

    /// Fails the actor on purpose (supervision tests).
    pub fn crash(&self) -> Result<()> {
        self.slot
            .get()?
            .cast(ResourceLockMessage::Crash)
            .map_err(|_| Error::Unavailable {
                message: "the resource-lock actor is not running".into(),
                source: None,
            })
    }
}

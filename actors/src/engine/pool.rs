//! The engine's bounded worker pool: at most `limit` executions run at once, at most
//! `queue_capacity` more wait, and one beyond that is rejected with `Overloaded` at once
//! (back-pressure the caller sees, instead of memory growing without bound).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ire_core::{Error, Result};
use tokio::sync::oneshot;

use crate::metric_names;

struct PoolState {
    limit: usize,
    queue_capacity: usize,
    running: usize,
    queued: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct WorkerPool {
    state: Arc<Mutex<PoolState>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock().expect("pool lock");
        f.debug_struct("WorkerPool")
            .field("limit", &s.limit)
            .field("running", &s.running)
            .field("queued", &s.queued)
            .finish()
    }
}

/// An admitted execution that has not started yet.
pub struct Reservation {
    pool: WorkerPool,
    started: bool,
}

/// A running execution's slot; dropping it frees the slot for the next in line.
pub struct Permit {
    pool: WorkerPool,
}

impl WorkerPool {
    /// A pool running `limit` at once with `queue_capacity` waiting.
    pub fn new(limit: usize, queue_capacity: usize) -> Self {
        WorkerPool {
            state: Arc::new(Mutex::new(PoolState {
                limit: limit.max(1),
                queue_capacity,
                running: 0,
                queued: 0,
                waiters: VecDeque::new(),
            })),
        }
    }

    /// Admits an execution, or rejects it with `Overloaded` when the queue is full.
    pub fn reserve(&self) -> Result<Reservation> {
        let mut s = self.state.lock().expect("pool lock");
        // Admitted executions either run or wait; together they stay within both bounds.
        if s.running + s.queued >= s.limit + s.queue_capacity {
            metrics::counter!(metric_names::ENGINE_REJECTED_TOTAL).increment(1);
            return Err(Error::Overloaded {
                message: format!(
                    "engine worker pool: {} running (limit {}), {} queued (capacity {})",
                    s.running, s.limit, s.queued, s.queue_capacity
                ),
            });
        }
        s.queued += 1;
        metrics::gauge!(metric_names::ENGINE_EXECUTIONS_QUEUED).set(s.queued as f64);
        Ok(Reservation {
            pool: self.clone(),
            started: false,
        })
    }

    /// Changes the number of executions that run at once. A lower limit takes effect as
    /// running executions finish.
    pub fn set_limit(&self, limit: usize) {
        let mut s = self.state.lock().expect("pool lock");
        s.limit = limit.max(1);
        Self::hand_over(&mut s);
    }

    /// Changes the queue's capacity.
    pub fn set_queue_capacity(&self, capacity: usize) {
        self.state.lock().expect("pool lock").queue_capacity = capacity;
    }

    /// (running, queued, limit).
    pub fn load(&self) -> (usize, usize, usize) {
        let s = self.state.lock().expect("pool lock");
        (s.running, s.queued, s.limit)
    }

    /// Gives free slots to waiters, first come first served.
    fn hand_over(s: &mut PoolState) {
        while s.running < s.limit {
            let Some(w) = s.waiters.pop_front() else {
                break;
            };
            // A waiter that went away leaves its sender behind; skip it (its queue count was
            // given back when it went).
            if w.send(()).is_ok() {
                s.running += 1;
                s.queued -= 1;
            }
        }
        metrics::gauge!(metric_names::ENGINE_EXECUTIONS_RUNNING).set(s.running as f64);
        metrics::gauge!(metric_names::ENGINE_EXECUTIONS_QUEUED).set(s.queued as f64);
    }

    fn release(&self) {
        let mut s = self.state.lock().expect("pool lock");
        s.running -= 1;
        Self::hand_over(&mut s);
    }
}

impl Reservation {
    /// Waits for a slot.
    pub async fn start(mut self) -> Permit {
        let rx = {
            let mut s = self.pool.state.lock().expect("pool lock");
            if s.running < s.limit && s.waiters.is_empty() {
                s.running += 1;
                s.queued -= 1;
                metrics::gauge!(metric_names::ENGINE_EXECUTIONS_RUNNING).set(s.running as f64);
                self.started = true;
                return Permit {
                    pool: self.pool.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            pool: self.pool.clone(),
        };
        let granted = waiting.rx.as_mut().expect("set above").await.is_ok();
        waiting.rx = None;
        // The pool never drops a live waiter's sender, so a wait always ends granted.
        debug_assert!(granted);
        self.started = true;
        Permit {
            pool: self.pool.clone(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.started {
            let mut s = self.pool.state.lock().expect("pool lock");
            s.queued -= 1;
            metrics::gauge!(metric_names::ENGINE_EXECUTIONS_QUEUED).set(s.queued as f64);
        }
    }
}

/// A wait for a slot that may be abandoned (its future dropped) at any point.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    pool: WorkerPool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                // Granted just before we left: the slot is ours, give it back. The grant
                // already took us out of the queue, so the reservation must not do it again.
                self.pool.release();
                let mut s = self.pool.state.lock().expect("pool lock");
                s.queued += 1;
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_rejects_with_overloaded() {
        let pool = WorkerPool::new(1, 1);
        let r1 = pool.reserve().unwrap();
        let p1 = r1.start().await;
        let _r2 = pool.reserve().unwrap();
        let e = pool.reserve().err().expect("third must be rejected");
        assert!(matches!(e, Error::Overloaded { .. }), "{e}");
        drop(p1);
        assert!(pool.reserve().is_ok());
    }

    #[tokio::test]
    async fn abandoned_wait_gives_its_place_back() {
        let pool = WorkerPool::new(1, 4);
        let p1 = pool.reserve().unwrap().start().await;
        let r2 = pool.reserve().unwrap();
        let waiting = tokio::spawn(r2.start());
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        drop(p1);
        assert_eq!(pool.load(), (0, 0, 1));
        let p3 = pool.reserve().unwrap().start().await;
        assert_eq!(pool.load(), (1, 0, 1));
        drop(p3);
    }
}

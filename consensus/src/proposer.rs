//! Proposal batching on the leader: writes that arrive while earlier proposals are in flight
//! are proposed together, as one raft entry ([`Command::Batch`]).
//!
//! openraft 0.9 appends and flushes each `client_write` on its own before it replicates it,
//! so one entry per command costs one leader flush, one follower flush and one replication
//! round per command. Here a single task takes the queued commands, at most
//! [`MAX_BATCH`] at a time, stamps them with the leader's clock and proposes them as one
//! entry; up to [`MAX_IN_FLIGHT`] entries are in flight at once, and what queues meanwhile
//! forms the next batch. A lone command is proposed at once, on its own, so batching adds no
//! latency when there is no contention.
//!
//! A command that only joins a queue (an acquire-or-wait of a key leased to someone else) may
//! be deferred: proposed alone, it would take a whole commit that the release it waits for
//! then queues behind. Such commands wait up to [`DEFER`] for another write to share their
//! entry; under contention that write is the holder's release, and a hand-off costs one
//! commit instead of two.
//!
//! Entries are handed to raft in the order the commands arrived (`client_write_ff` returns
//! once raft has the entry), so a caller that sends two writes without waiting sees them
//! applied in that order.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::node::ConsensusError;
use crate::transport::NodeId;
use crate::types::{ClusterNode, Command, Request, Response, TypeConfig};

/// The most commands proposed as one entry.
pub const MAX_BATCH: usize = 64;

/// The largest command accepted, encoded: well under the transport's frame limit
/// ([`crate::transport::frame::MAX_PAYLOAD_BYTES`]), so that an entry always reaches the
/// followers whole. A larger command is refused with [`ConsensusError::Invalid`] before it
/// is proposed (or forwarded).
pub const MAX_COMMAND_BYTES: usize = 4 << 20;

/// The most bytes of commands proposed as one entry (a single command up to
/// [`MAX_COMMAND_BYTES`] goes alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The encoded size of `command`, or the refusal of a command over [`MAX_COMMAND_BYTES`].
pub fn check_size(command: &Command) -> Result<usize, ConsensusError> {
    let size = bincode::serde::encode_into_std_write(
        command,
        &mut std::io::sink(),
        bincode::config::standard(),
    )
    .map_err(|e| ConsensusError::Invalid {
        field: "command".into(),
        message: format!("a {} command cannot be encoded: {e}", command.name()),
    })?;
    if size > MAX_COMMAND_BYTES {
        return Err(ConsensusError::Invalid {
            field: "command".into(),
            message: format!(
                "a {} command of {size} bytes is over the limit of {MAX_COMMAND_BYTES} bytes \
                 per command; split it (ledger records and stored values must stay smaller)",
                command.name()
            ),
        });
    }
    Ok(size)
}

/// The most entries proposed and not yet answered. One: on the 2-core hosts measured (see
/// `docs/benchmarks.md`), larger batches beat overlapping entries, which openraft appends and
/// replicates one after the other anyway.
pub const MAX_IN_FLIGHT: usize = 1;

/// How long a deferrable command waits for another write to share its entry.
pub const DEFER: std::time::Duration = std::time::Duration::from_millis(2);

type Reply = oneshot::Sender<Result<Response, ConsensusError>>;

struct Pending {
    command: Command,
    /// Encoded size.
    bytes: usize,
    deferrable: bool,
    reply: Reply,
}

/// The commands of the next entry.
#[derive(Default)]
struct Batch {
    items: Vec<Pending>,
    bytes: usize,
}

impl Batch {
    /// Adds `p` if it fits (the first always does); hands it back otherwise.
    fn push(&mut self, p: Pending) -> Option<Pending> {
        if !self.items.is_empty()
            && (self.items.len() >= MAX_BATCH || self.bytes + p.bytes > MAX_BATCH_BYTES)
        {
            return Some(p);
        }
        self.bytes += p.bytes;
        self.items.push(p);
        None
    }

    fn is_full(&self) -> bool {
        self.items.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Queues commands for the batching task (see the module docs).
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    task: tokio::task::JoinHandle<()>,
}

impl Proposer {
    /// Starts the batching task of a node; `to_error` turns raft's write errors into the
    /// node's.
    pub(crate) fn start(
        raft: Raft<TypeConfig>,
        to_error: fn(
            NodeId,
            RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>,
        ) -> ConsensusError,
        id: NodeId,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, rx, move |e| to_error(id, e)));
        Self { tx, task }
    }

    /// Proposes `command` (batched with others) and waits for its answer. A `deferrable`
    /// command may wait up to [`DEFER`] for company (see the module docs).
    pub(crate) async fn propose(
        &self,
        command: Command,
        deferrable: bool,
    ) -> Result<Response, ConsensusError> {
        let bytes = check_size(&command)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                command,
                bytes,
                deferrable,
                reply,
            })
            .map_err(|_| ConsensusError::Unavailable {
                message: "the node is shutting down".into(),
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(ConsensusError::Unavailable {
                message: "the proposal was dropped (raft stopped)".into(),
            })
        })
    }

    /// Stops the batching task.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    to_error: impl Fn(RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>) -> ConsensusError
        + Send
        + Sync
        + Copy
        + 'static,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A command that did not fit the last batch starts the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting for a free slot is what lets the next batch grow.
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = Batch::default();
        let _fits = batch.push(first);
        carry = drain(&mut rx, &mut batch);
        if carry.is_none() && batch.items.iter().all(|p| p.deferrable) {
            let until = tokio::time::Instant::now() + DEFER;
            while !batch.is_full() {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(p)) => {
                        let company = !p.deferrable;
                        if let Some(p) = batch.push(p) {
                            carry = Some(p);
                            break;
                        }
                        carry = drain(&mut rx, &mut batch);
                        if company || carry.is_some() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        let mut batch = batch.items;
        // A caller that gave up needs no proposal.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (mut commands, replies): (Vec<Command>, Vec<Reply>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let single = commands.len() == 1;
        let command = if single {
            commands.pop().expect("one command")
        } else {
            Command::Batch(commands)
        };
        // The leader's clock, taken right before proposing: every replica decides expiry
        // from this stamp.
        let request = Request::stamped_now(command);
        match raft.client_write_ff(request).await {
            Err(fatal) => answer_all(replies, Err(to_error(RaftError::Fatal(fatal)))),
            Ok(written) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = match written.await {
                        Ok(Ok(resp)) => Ok(resp.data),
                        Ok(Err(e)) => Err(to_error(RaftError::APIError(e))),
                        // As openraft's own client_write: a dropped answer means raft's
                        // core stopped, and the write's fate is unknown (not retried).
                        Err(_) => Err(ConsensusError::Fatal {
                            message: "raft stopped before answering".into(),
                        }),
                    };
                    match result {
                        Ok(Response::Batch(answers))
                            if !single && answers.len() == replies.len() =>
                        {
                            for (reply, answer) in replies.into_iter().zip(answers) {
                                let _ = reply.send(Ok(answer));
                            }
                        }
                        Ok(answer) if single => answer_all(replies, Ok(answer)),
                        Ok(other) => answer_all(
                            replies,
                            Err(ConsensusError::Fatal {
                                message: format!("a batch of commands was answered {other:?}"),
                            }),
                        ),
                        Err(e) => answer_all(replies, Err(e)),
                    }
                });
            }
        }
    }
}

/// Takes what is queued, up to a full batch; returns the command that did not fit.
fn drain(rx: &mut mpsc::UnboundedReceiver<Pending>, batch: &mut Batch) -> Option<Pending> {
    while !batch.is_full() {
        match rx.try_recv() {
            Ok(p) => {
                if let Some(p) = batch.push(p) {
                    return Some(p);
                }
            }
            Err(_) => break,
        }
    }
    None
}

fn answer_all(replies: Vec<Reply>, answer: Result<Response, ConsensusError>) {
    for reply in replies {
        let _ = reply.send(answer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: usize) -> Pending {
        Pending {
            command: Command::Unhold {
                key: "docker/a/b/1".parse().unwrap(),
            },
            bytes,
            deferrable: false,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_closes_at_its_byte_budget_and_a_big_command_goes_alone() {
        let mut batch = Batch::default();
        assert!(batch.push(pending(MAX_BATCH_BYTES / 2)).is_none());
        assert!(batch.push(pending(MAX_BATCH_BYTES / 4)).is_none());
        // Over the budget: handed back, to start the next batch.
        assert!(batch.push(pending(MAX_BATCH_BYTES / 2)).is_some());
        assert_eq!(batch.items.len(), 2);
        // The first command always fits, whatever its size (up to the command cap).
        let mut alone = Batch::default();
        assert!(alone.push(pending(MAX_COMMAND_BYTES)).is_none());
        assert!(alone.is_full());
        assert!(alone.push(pending(1)).is_some());
        // The count budget holds too.
        let mut many = Batch::default();
        for _ in 0..MAX_BATCH {
            assert!(many.push(pending(10)).is_none());
        }
        assert!(many.push(pending(10)).is_some());
    }

    #[test]
    fn a_command_over_the_cap_is_refused_with_its_size() {
        let small = Command::StorePut {
            collection: "c".into(),
            items: vec![("k".into(), "1".into())],
        };
        assert!(check_size(&small).unwrap() < 100);
        let big = Command::StorePut {
            collection: "c".into(),
            items: vec![("k".into(), "x".repeat(MAX_COMMAND_BYTES))],
        };
        let err = check_size(&big).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        assert!(err.contains("store-put"), "{err}");
    }
}

//! A recorded history of lock operations and the checks a correct lock service passes.
//!
//! Clients record every acknowledged operation with its real-time interval; after the run
//! the committed log is read back. Leases are placed on the state machine's clock (the
//! leader stamps in the log, never running backwards), and the checks are:
//! - every grant's fencing token is the sequence number of an `Acquire` of that key by that
//!   holder (the clients here propose one command per entry: the token names its log index);
//! - every acknowledged write is in the committed log at the index it was answered for;
//! - no two leases of one key overlap in time (a lease runs from its grant's stamp to the
//!   latest acknowledged expiry, or to its release if that comes first);
//! - a key's tokens only grow: a grant acknowledged before another was requested has a token
//!   no larger.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ire_core::{FencingToken, LockOutcome, ResourceKey};
use openraft::EntryPayload;

use crate::state::locks;
use crate::types::{Command, Entry, Response};

/// One acknowledged lock operation.
#[derive(Debug, Clone)]
pub struct Event {
    /// The client that made it.
    pub client: usize,
    /// What was proposed.
    pub command: Command,
    /// When the client sent it.
    pub sent: Instant,
    /// When the answer arrived.
    pub received: Instant,
    /// The log index of the entry that answered.
    pub index: u64,
    /// The answer.
    pub response: Response,
}

/// Events recorded by concurrent clients.
#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    /// Records an acknowledged operation.
    pub fn record(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    /// Everything recorded.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// What the check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Distinct leases granted and acknowledged.
    pub leases: usize,
    /// Leases that were handed from one holder to another on some key.
    pub handoffs: usize,
    /// Leases that ended by release.
    pub released: usize,
}

#[derive(Debug)]
struct LeaseSpan {
    holder: String,
    start: DateTime<Utc>,
    expiry: DateTime<Utc>,
    release: Option<DateTime<Utc>>,
}

impl LeaseSpan {
    fn end(&self) -> DateTime<Utc> {
        self.release.map_or(self.expiry, |r| r.min(self.expiry))
    }
}

/// Checks `events` against the committed `log` (every entry from index 1, none purged).
pub fn check(events: &[Event], log: &[Entry]) -> Result<Summary, String> {
    let by_index: BTreeMap<u64, &Entry> = log.iter().map(|e| (e.log_id.index, e)).collect();
    // The state machine's clock at each entry.
    let mut clock: BTreeMap<u64, DateTime<Utc>> = BTreeMap::new();
    let mut now: Option<DateTime<Utc>> = None;
    for e in log {
        if let EntryPayload::Normal(r) = &e.payload {
            now = Some(now.map_or(r.now, |c| c.max(r.now)));
        }
        if let Some(n) = now {
            clock.insert(e.log_id.index, n);
        }
    }
    let command_at = |i: u64| match by_index.get(&i).map(|e| &e.payload) {
        Some(EntryPayload::Normal(r)) => Some(&r.command),
        _ => None,
    };

    let mut leases: BTreeMap<(ResourceKey, FencingToken), LeaseSpan> = BTreeMap::new();
    for ev in events {
        if command_at(ev.index) != Some(&ev.command) {
            return Err(format!(
                "acknowledged {} at index {} is not in the committed log (found {:?})",
                ev.command,
                ev.index,
                command_at(ev.index)
            ));
        }
        match (&ev.command, &ev.response) {
            (Command::Acquire { key, holder, .. }, Response::Lock(LockOutcome::Granted(g))) => {
                let at = locks::token_index(g.token);
                match command_at(at) {
                    Some(Command::Acquire {
                        key: k, holder: h, ..
                    }) if k == key && h == holder && g.token.0 == locks::sequence(at, 0) => {}
                    other => {
                        return Err(format!(
                            "grant of {key} to {holder} has token {} but that entry is {other:?}",
                            g.token
                        ))
                    }
                }
                let start = clock[&at];
                let span = leases.entry((key.clone(), g.token)).or_insert(LeaseSpan {
                    holder: holder.clone(),
                    start,
                    expiry: g.expires_at,
                    release: None,
                });
                span.expiry = span.expiry.max(g.expires_at);
            }
            (Command::Renew { key, token, .. }, Response::Lease(g)) => {
                if g.token != *token {
                    return Err(format!(
                        "renew of {key} token {token} answered token {}",
                        g.token
                    ));
                }
                let span = leases.get_mut(&(key.clone(), *token)).ok_or_else(|| {
                    format!(
                        "renew of {key} token {token} acknowledged without an acknowledged grant"
                    )
                })?;
                span.expiry = span.expiry.max(g.expires_at);
            }
            _ => {}
        }
    }
    // A lease ends at its first release in the log, if that comes before its expiry.
    let mut released = 0;
    for e in log {
        if let EntryPayload::Normal(r) = &e.payload {
            if let Command::Release { key, token } = &r.command {
                if let Some(span) = leases.get_mut(&(key.clone(), *token)) {
                    if span.release.is_none() && e.log_id.index > locks::token_index(*token) {
                        span.release = Some(clock[&e.log_id.index]);
                        released += 1;
                    }
                }
            }
        }
    }

    let mut per_key: BTreeMap<&ResourceKey, Vec<(FencingToken, &LeaseSpan)>> = BTreeMap::new();
    for ((k, t), s) in &leases {
        per_key.entry(k).or_default().push((*t, s));
    }
    let mut handoffs = 0;
    for (key, spans) in &per_key {
        for (i, (ta, a)) in spans.iter().enumerate() {
            for (tb, b) in &spans[i + 1..] {
                if a.start < b.end() && b.start < a.end() {
                    return Err(format!(
                        "{key}: lease {ta} of {} [{} .. {}) overlaps lease {tb} of {} [{} .. {})",
                        a.holder,
                        a.start.to_rfc3339(),
                        a.end().to_rfc3339(),
                        b.holder,
                        b.start.to_rfc3339(),
                        b.end().to_rfc3339()
                    ));
                }
            }
        }
        handoffs += spans
            .windows(2)
            .filter(|w| w[0].1.holder != w[1].1.holder)
            .count();
    }

    // Tokens only grow in real time.
    let mut grants: BTreeMap<&ResourceKey, Vec<(&Event, FencingToken)>> = BTreeMap::new();
    for ev in events {
        if let (Command::Acquire { key, .. }, Response::Lock(LockOutcome::Granted(g))) =
            (&ev.command, &ev.response)
        {
            grants.entry(key).or_default().push((ev, g.token));
        }
    }
    for (key, gs) in &grants {
        for (a, ta) in gs {
            for (b, tb) in gs {
                if a.received < b.sent && tb < ta {
                    return Err(format!(
                        "{key}: token {tb} granted to client {} after token {ta} was granted to client {}",
                        b.client, a.client
                    ));
                }
            }
        }
    }
    Ok(Summary {
        leases: leases.len(),
        handoffs,
        released,
    })
}

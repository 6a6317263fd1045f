//! The userspace packet emulator: it reads the fault's NFQUEUE, holds packets for their
//! delay, drops, corrupts or duplicates them as the [`Model`] decides, and gives each its
//! verdict.
//!
//! A delayed packet the target sends is not held in the kernel: it is copied, dropped at
//! once, and the copy sent through a raw socket when its delay is over. A held packet would
//! stay charged to the sending socket (netem orphans it, netfilter cannot), and a sender
//! would be throttled to one send buffer per delay: TCP to a fraction of a megabit per
//! second at 100 ms. Packets the target receives are held and then accepted.
//!
//! The queue is bound with fail-open (a full queue lets packets through) and the nftables
//! rule that feeds it has bypass (no listener lets packets through): when this program is
//! slow or dead, traffic flows unimpaired rather than being blackholed. Packets still held
//! when the queue is closed by a crash are lost (at most one delay's worth); on SIGTERM
//! they are released first.
//!
//! nfq does not expose its socket, so the emulator finds the netlink socket `Queue::open`
//! created among the process's descriptors and waits on it with mio, with a timeout set to
//! the next held packet's release.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use ire_core::{Error, ErrorClass, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nfq::{Message, Queue, Verdict};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::model::Model;
use crate::plan::{Plan, OWN_MARK};

/// The longest wait between checks of the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Packets the kernel may hold for the emulator (each waits out its delay in the queue).
const QUEUE_MAX_LEN: u32 = 1 << 17;

/// What the emulator did, printed when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Stats {
    /// Packets read from the queue.
    pub packets: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets held for a delay.
    pub delayed: u64,
    /// Packets sent at once while others were delayed.
    pub reordered: u64,
    /// Packets with a flipped bit.
    pub corrupted: u64,
    /// Copies sent.
    pub duplicated: u64,
    /// Delayed outgoing packets sent again as copies (the originals dropped).
    pub resent: u64,
    /// Verdicts or copies the kernel refused.
    pub errors: u64,
}

/// A packet waiting out its delay.
struct Held {
    at: Instant,
    seq: u64,
    packet: Pending,
    copy: Option<Vec<u8>>,
}

/// How a delayed packet leaves.
enum Pending {
    /// Its verdict is due (a received packet, held in the kernel).
    Verdict(Message),
    /// Its copy is to be sent (an outgoing packet, already dropped).
    Resend(Vec<u8>),
}

/// The netfilter hook of locally generated packets (`NF_INET_LOCAL_OUT`).
const HOOK_LOCAL_OUT: u8 = 3;

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    // Reversed: the heap's top is the earliest release.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The socket descriptors this process has open.
fn socket_fds() -> BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn fatal(what: String, e: io::Error) -> Error {
    Error::other(ErrorClass::Fatal, what, Some(Box::new(e)))
}

/// Sends copies of packets with the emulator's own mark, so its rules let them pass.
struct Copier {
    v4: Socket,
    v6: Option<Socket>,
}

impl Copier {
    fn open() -> io::Result<Copier> {
        // IPPROTO_RAW: the packet carries its own IP header.
        let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        v4.set_mark(OWN_MARK)?;
        // Releases come in bursts (every packet whose delay ended since the last wake-up).
        let _ = v4.set_send_buffer_size(4 << 20);
        let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255)))
            .and_then(|s| {
                s.set_header_included_v6(true)?;
                s.set_mark(OWN_MARK)?;
                let _ = s.set_send_buffer_size(4 << 20);
                Ok(s)
            })
            .ok();
        Ok(Copier { v4, v6 })
    }

    /// Sends `packet` (from its IP header on) to its destination: out of the namespace for
    /// egress packets, through loopback to the local socket for ingress ones.
    fn send(&self, packet: &[u8]) -> io::Result<()> {
        match packet.first().map(|b| b >> 4) {
            Some(4) if packet.len() >= 20 => {
                let dst: [u8; 4] = packet[16..20].try_into().expect("4 bytes");
                let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(dst)), 0);
                self.v4.send_to(packet, &to.into()).map(|_| ())
            }
            Some(6) if packet.len() >= 40 => {
                let Some(v6) = &self.v6 else {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "no IPv6 raw socket",
                    ));
                };
                let dst: [u8; 16] = packet[24..40].try_into().expect("16 bytes");
                let to = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(dst)), 0);
                v6.send_to(packet, &to.into()).map(|_| ())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an IP packet",
            )),
        }
    }
}

/// Flips one random bit after the IP header (in the transport header or payload, where the
/// receiver's checksum, or its application, sees it).
fn corrupt(packet: &mut [u8], rng: &mut fastrand::Rng) -> bool {
    let header = match packet.first().map(|b| b >> 4) {
        Some(4) => usize::from(packet[0] & 0x0f) * 4,
        Some(6) => 40,
        _ => return false,
    };
    if packet.len() <= header {
        return false;
    }
    let at = rng.usize(header..packet.len());
    packet[at] ^= 1 << rng.u8(0..8);
    true
}

/// The emulator of one fault, bound to its queue.
pub struct Emulator {
    queue: Queue,
    fd: RawFd,
    poll: Poll,
    model: Model,
    rng: fastrand::Rng,
    copier: Option<Copier>,
    /// Delayed outgoing packets are copied, dropped and sent again (see the module docs).
    resend_delayed: bool,
    held: BinaryHeap<Held>,
    seq: u64,
    stats: Stats,
}

impl Emulator {
    /// Binds the plan's queue (before its nftables rule exists, so no packet is missed).
    pub fn open(plan: &Plan) -> Result<Emulator> {
        let num = plan.names.queue;
        let before = socket_fds();
        let mut queue = Queue::open().map_err(|e| fatal("opening an NFQUEUE socket".into(), e))?;
        let after = socket_fds();
        let new: Vec<RawFd> = after.difference(&before).copied().collect();
        let [fd] = new[..] else {
            return Err(Error::other(
                ErrorClass::Fatal,
                format!("cannot tell the NFQUEUE socket among {new:?}"),
                None,
            ));
        };
        queue.bind(num).map_err(|e| {
            fatal(
                format!("binding NFQUEUE {num} (is another program reading it?)"),
                e,
            )
        })?;
        let resends = plan.fault.delay.is_some() && plan.fault.direction.egress();
        let setup = |q: &mut Queue| -> io::Result<()> {
            q.set_fail_open(num, true)?;
            q.set_queue_max_len(num, QUEUE_MAX_LEN)?;
            if !(plan.needs_payload() || resends) {
                // Delay, loss and reordering need only the verdict: copy no packet data.
                q.set_copy_range(num, 0)?;
            }
            Ok(())
        };
        setup(&mut queue).map_err(|e| fatal(format!("configuring NFQUEUE {num}"), e))?;
        queue.set_nonblocking(true);
        let poll = Poll::new().map_err(|e| fatal("creating a poller".into(), e))?;
        poll.registry()
            .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
            .map_err(|e| fatal("watching the NFQUEUE socket".into(), e))?;
        let copier = if plan.fault.duplicate.is_some() || resends {
            Some(Copier::open().map_err(|e| {
                fatal(
                    "opening a raw socket for duplicates and delayed packets (needs CAP_NET_RAW)"
                        .into(),
                    e,
                )
            })?)
        } else {
            None
        };
        Ok(Emulator {
            queue,
            fd,
            poll,
            model: Model::new(&plan.fault),
            rng: fastrand::Rng::new(),
            copier,
            resend_delayed: resends,
            held: BinaryHeap::new(),
            seq: 0,
            stats: Stats::default(),
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Runs until `stop` is set. Held packets stay held: delete the rule that feeds the
    /// queue, then call [`Emulator::finish`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut events = Events::with_capacity(4);
        while !stop.load(AtomicOrdering::Relaxed) {
            self.release_due(Instant::now());
            let wait = self
                .held
                .peek()
                .map(|h| h.at.saturating_duration_since(Instant::now()))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            if wait < Duration::from_millis(1) && !self.held.is_empty() {
                // epoll waits in whole milliseconds: sleep the last fraction instead.
                std::thread::sleep(wait);
            } else {
                match self.poll.poll(&mut events, Some(wait)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(fatal(format!("waiting on fd {}", self.fd), e)),
                }
            }
            self.drain()?;
        }
        Ok(())
    }

    /// Reads what is left in the queue and releases every held packet at once.
    pub fn finish(mut self) -> Stats {
        // A read error here only means fewer packets to release.
        let _ = self.drain();
        while let Some(h) = self.held.pop() {
            self.release(h);
        }
        self.stats
    }

    /// Reads every packet waiting in the queue (the poller is edge-triggered).
    fn drain(&mut self) -> Result<()> {
        loop {
            match self.queue.recv() {
                Ok(msg) => self.handle(msg),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The kernel dropped messages it could not queue to us: with fail-open the
                // packets went through unimpaired. Keep going.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    self.stats.errors += 1;
                }
                Err(e) => return Err(fatal("reading the NFQUEUE".into(), e)),
            }
        }
    }

    fn handle(&mut self, mut msg: Message) {
        self.stats.packets += 1;
        let d = self.model.decide();
        if d.copies == 0 {
            self.stats.dropped += 1;
            msg.set_verdict(Verdict::Drop);
            self.verdict(msg);
            return;
        }
        // The copy is taken before corruption: netem corrupts one of the two.
        let copy = (d.copies == 2 && self.copier.is_some()).then(|| msg.get_payload().to_vec());
        if d.corrupt && corrupt(msg.get_payload_mut(), &mut self.rng) {
            self.stats.corrupted += 1;
        }
        if d.reordered {
            self.stats.reordered += 1;
        }
        if d.delay.is_zero() {
            self.send(msg, copy);
            return;
        }
        self.stats.delayed += 1;
        self.seq += 1;
        let packet = if self.resend_delayed && msg.get_hook() == HOOK_LOCAL_OUT {
            let data = msg.get_payload().to_vec();
            msg.set_verdict(Verdict::Drop);
            self.verdict(msg);
            Pending::Resend(data)
        } else {
            Pending::Verdict(msg)
        };
        self.held.push(Held {
            at: Instant::now() + d.delay,
            seq: self.seq,
            packet,
            copy,
        });
    }

    /// Lets a delayed packet go, with its copy.
    fn release(&mut self, h: Held) {
        match h.packet {
            Pending::Verdict(msg) => self.send(msg, h.copy),
            Pending::Resend(data) => {
                self.copy(&data, true);
                if let Some(c) = h.copy {
                    self.copy(&c, false);
                }
            }
        }
    }

    /// Sends a packet through the raw socket.
    fn copy(&mut self, packet: &[u8], resend: bool) {
        let Some(copier) = &self.copier else {
            return;
        };
        match copier.send(packet) {
            Ok(()) if resend => self.stats.resent += 1,
            Ok(()) => self.stats.duplicated += 1,
            Err(_) => self.stats.errors += 1,
        }
    }

    fn send(&mut self, mut msg: Message, copy: Option<Vec<u8>>) {
        msg.set_verdict(Verdict::Accept);
        self.verdict(msg);
        if let Some(packet) = copy {
            self.copy(&packet, false);
        }
    }

    fn verdict(&mut self, msg: Message) {
        if self.queue.verdict(msg).is_err() {
            self.stats.errors += 1;
        }
    }

    fn release_due(&mut self, now: Instant) {
        while self.held.peek().is_some_and(|h| h.at <= now) {
            let h = self.held.pop().expect("peeked");
            self.release(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_flips_exactly_one_bit_after_the_ip_header() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..200 {
            let mut p = vec![0u8; 60];
            p[0] = 0x45; // IPv4, 20-byte header
            let orig = p.clone();
            assert!(corrupt(&mut p, &mut rng));
            let diff: Vec<usize> = (0..p.len()).filter(|i| p[*i] != orig[*i]).collect();
            assert_eq!(diff.len(), 1);
            assert!(diff[0] >= 20);
            assert_eq!((p[diff[0]] ^ orig[diff[0]]).count_ones(), 1);
        }
        let mut header_only = vec![0x45u8; 20];
        assert!(!corrupt(&mut header_only, &mut rng));
    }
}

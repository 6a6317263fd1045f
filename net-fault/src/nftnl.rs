//! Just enough of nf_tables' netlink protocol to append one rule that sends packets to an
//! NFQUEUE with bypass.
//!
//! The `nft` tool builds the fault's table and chains; this module adds the queue rule,
//! because `nft` can only write the native `queue` statement, and kernels built without
//! `nft_queue` (`CONFIG_NFT_QUEUE` unset, as on some hardened and minimal kernels) refuse it.
//! Those kernels usually still have `nft_compat` and xtables' `NFQUEUE` target, the one
//! iptables-nft uses; so the rule is tried native first and as the compat target second.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 1 << 15;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWRULE: u16 = 6;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFTA_QUEUE_NUM: u16 = 1;
const NFTA_QUEUE_TOTAL: u16 = 2;
const NFTA_QUEUE_FLAGS: u16 = 3;
const NFT_QUEUE_FLAG_BYPASS: u16 = 0x1;

const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
/// `NFQ_FLAG_BYPASS` of `struct xt_NFQ_info_v3`.
const XT_NFQ_FLAG_BYPASS: u16 = 0x1;

/// The nf_tables family of `inet` tables (`NFPROTO_INET`).
pub const FAMILY_INET: u8 = 1;

/// How the queue rule was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueExpr {
    /// nf_tables' own `queue` expression (`nft_queue`).
    Native,
    /// xtables' `NFQUEUE` target (revision 3) through `nft_compat`.
    Compat,
}

/// A netlink message under construction: attributes are appended, nests are closed by
/// patching their length.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.push(family); // nfgenmsg
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("attributes are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v);
    }

    /// Opens a nested attribute; returns where its header is, for [`Msg::end_nest`].
    fn begin_nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).expect("attributes are small");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("messages are small");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// The batch that appends `[expr]` as a rule of `table`'s `chain`.
fn rule_batch(table: &str, chain: &str, queue: u16, expr: QueueExpr, seq: u32) -> Vec<u8> {
    let mut out = Msg::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish();
    let mut m = Msg::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
        seq + 1,
        FAMILY_INET,
        0,
    );
    m.attr_str(NFTA_RULE_TABLE, table);
    m.attr_str(NFTA_RULE_CHAIN, chain);
    let exprs = m.begin_nest(NFTA_RULE_EXPRESSIONS);
    let elem = m.begin_nest(NFTA_LIST_ELEM);
    match expr {
        QueueExpr::Native => {
            m.attr_str(NFTA_EXPR_NAME, "queue");
            let data = m.begin_nest(NFTA_EXPR_DATA);
            m.attr(NFTA_QUEUE_NUM, &queue.to_be_bytes());
            m.attr(NFTA_QUEUE_TOTAL, &1u16.to_be_bytes());
            m.attr(NFTA_QUEUE_FLAGS, &NFT_QUEUE_FLAG_BYPASS.to_be_bytes());
            m.end_nest(data);
        }
        QueueExpr::Compat => {
            m.attr_str(NFTA_EXPR_NAME, "target");
            let data = m.begin_nest(NFTA_EXPR_DATA);
            m.attr_str(NFTA_TARGET_NAME, "NFQUEUE");
            m.attr(NFTA_TARGET_REV, &3u32.to_be_bytes());
            // struct xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; }, host
            // order, padded to the 8 bytes XT_ALIGN gives it.
            let mut info = Vec::with_capacity(8);
            info.extend_from_slice(&queue.to_ne_bytes());
            info.extend_from_slice(&1u16.to_ne_bytes());
            info.extend_from_slice(&XT_NFQ_FLAG_BYPASS.to_ne_bytes());
            info.extend_from_slice(&0u16.to_ne_bytes());
            m.attr(NFTA_TARGET_INFO, &info);
            m.end_nest(data);
        }
    }
    m.end_nest(elem);
    m.end_nest(exprs);
    out.extend(m.finish());
    out.extend(
        Msg::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq + 2,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish(),
    );
    out
}

/// Sends one batch and waits for the acknowledgement of the message numbered `seq`.
fn transact(batch: &[u8], seq: u32) -> io::Result<()> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.send_to(batch, &SocketAddr::new(0, 0), 0)?;
    loop {
        let mut buf = Vec::with_capacity(8192);
        let n = sock.recv(&mut buf, 0)?;
        let mut rest = &buf[..n.min(buf.len())];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
            let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink reply",
                ));
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let errno = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                if msg_seq == seq {
                    return Ok(());
                }
            }
            let aligned = (len + 3) & !3;
            rest = &rest[aligned.min(rest.len())..];
        }
    }
}

/// Appends a rule sending every packet that reaches `chain` of `inet table` to NFQUEUE
/// `queue`, with bypass (packets flow when no program listens on the queue). Returns the
/// expression the kernel took.
pub fn add_queue_rule(table: &str, chain: &str, queue: u16) -> io::Result<QueueExpr> {
    let seq = (std::process::id() & 0xffff) << 8;
    match transact(
        &rule_batch(table, chain, queue, QueueExpr::Native, seq),
        seq + 1,
    ) {
        Ok(()) => Ok(QueueExpr::Native),
        // ENOENT: no `queue` expression in this kernel (the table and chain exist: nft made
        // them). Try the xtables target.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
            transact(
                &rule_batch(table, chain, queue, QueueExpr::Compat, seq),
                seq + 1,
            )
            .map_err(|e2| {
                io::Error::new(
                    e2.kind(),
                    format!(
                        "this kernel has neither nft_queue nor nft_compat with xt_NFQUEUE \
                             (native queue: {e}; NFQUEUE target: {e2})"
                    ),
                )
            })?;
            Ok(QueueExpr::Compat)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_batch_is_three_well_formed_messages() {
        let b = rule_batch("ire_x", "queue", 4242, QueueExpr::Compat, 100);
        let mut rest = &b[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0, "messages are aligned");
            kinds.push(u16::from_ne_bytes(rest[4..6].try_into().unwrap()));
            rest = &rest[len..];
        }
        assert_eq!(
            kinds,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
                NFNL_MSG_BATCH_END
            ]
        );
        // The queue number is in the target's info, in host order.
        let needle = 4242u16.to_ne_bytes();
        assert!(b.windows(2).any(|w| w == needle));
        assert!(b.windows(7).any(|w| w == b"NFQUEUE"));
    }
}

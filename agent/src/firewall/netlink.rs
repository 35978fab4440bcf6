//! nf_tables set elements over netlink: the elements of a change, or of a
//! whole block list, go to the kernel as one nfnetlink batch, which the
//! kernel applies as one transaction (all of it or none).
//!
//! Why not `nft -f` for elements: `nft` parses a text line per element, and
//! a million elements cost it about 1.5 s of CPU before the kernel sees the
//! first one; a process per change also costs milliseconds of start-up.
//! Tables, chains, sets and rules are few and rarely change, so they still
//! go through `nft -f` (see [`super::nftables`]).
//!
//! The messages built here are the kernel's `NFT_MSG_NEWSETELEM` and
//! `NFT_MSG_DELSETELEM` between `NFNL_MSG_BATCH_BEGIN` and `_END`
//! (`include/uapi/linux/netfilter/nf_tables.h`); sockets come from `nix`.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// An attribute's length is 16 bits: one message's element list stays
/// under this many bytes, and a big change is split over several messages
/// of the same batch.
const MAX_LIST_BYTES: usize = 60_000;

/// Room for the kernel's answers to a big batch (one ack per message).
const RECEIVE_BUFFER: usize = 16 << 20;

/// A netlink exchange with the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netfilter netlink socket: {0} (does this kernel have nf_tables?)")]
    Open(Errno),
    #[error("cannot enter the network namespace {path}: {detail}")]
    Namespace { path: PathBuf, detail: String },
    #[error("cannot send a batch of {bytes} bytes to the kernel: {errno}")]
    Send { bytes: usize, errno: Errno },
    #[error("the kernel refused to {what}: {errno}{}", hint(*.errno))]
    Refused { what: String, errno: Errno },
    #[error("no answer from the kernel to {what}")]
    NoAnswer { what: String },
    #[error("cannot read the kernel's answer: {0}")]
    Receive(Errno),
}

fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENFILE => " (the set is full; a full sync makes it bigger)",
        Errno::ENOENT => " (no such element, set or table)",
        _ => "",
    }
}

/// Adding or deleting elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Delete,
}

/// One transaction under construction. Each request asks for an ack, so a
/// commit knows every message was applied.
pub struct Batch {
    buf: Vec<u8>,
    /// Sequence number and description of each request, for errors.
    requests: Vec<(u32, String)>,
    seq: u32,
}

impl Batch {
    /// An empty batch; `first_seq` numbers its messages from there.
    pub fn new(first_seq: u32) -> Self {
        let mut b = Batch {
            buf: Vec::with_capacity(4_096),
            requests: Vec::new(),
            seq: first_seq,
        };
        let at = b.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0);
        b.close(at);
        b
    }

    /// Whether it holds any request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests in it (messages the kernel acknowledges).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Adds (each with its timeout in ms, `None`: none) or deletes the
    /// elements keyed by these addresses, in as many messages as it takes.
    pub fn elements(
        &mut self,
        verb: Verb,
        table: &str,
        set: &str,
        elements: impl IntoIterator<Item = (IpAddr, Option<u64>)>,
    ) {
        let (ty, flags, name) = match verb {
            Verb::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add"),
            Verb::Delete => (NFT_MSG_DELSETELEM, 0, "delete"),
        };
        // (message start, list start, elements in it)
        let mut open: Option<(usize, usize, usize)> = None;
        for (addr, timeout) in elements {
            if let Some((msg, list, n)) = open {
                if self.buf.len() - list > MAX_LIST_BYTES {
                    self.finish_list(msg, list, n, name, set);
                    open = None;
                }
            }
            let (msg, list, n) = match open {
                Some(o) => o,
                None => {
                    let msg = self.request(ty, flags, String::new());
                    self.strz(NFTA_SET_ELEM_LIST_TABLE, table);
                    self.strz(NFTA_SET_ELEM_LIST_SET, set);
                    let list = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
                    (msg, list, 0)
                }
            };
            let elem = self.nest(NFTA_LIST_ELEM);
            let key = self.nest(NFTA_SET_ELEM_KEY);
            match addr {
                IpAddr::V4(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
                IpAddr::V6(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
            }
            self.close_nest(key);
            if let (Verb::Add, Some(ms)) = (verb, timeout) {
                self.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            self.close_nest(elem);
            open = Some((msg, list, n + 1));
        }
        if let Some((msg, list, n)) = open {
            self.finish_list(msg, list, n, name, set);
        }
    }

    fn finish_list(&mut self, msg: usize, list: usize, n: usize, verb: &str, set: &str) {
        self.close_nest(list);
        self.close(msg);
        if let Some(last) = self.requests.last_mut() {
            last.1 = format!("{verb} {n} elements in set {set}");
        }
    }

    /// The batch's bytes, closed with `BATCH_END`.
    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>) {
        let at = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0);
        self.close(at);
        (self.buf, self.requests)
    }

    fn request(&mut self, msg: u16, flags: u16, what: String) -> usize {
        let at = self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_INET,
        );
        self.requests.push((self.seq, what));
        at
    }

    /// A message header (its length patched by `close`) and the nfnetlink
    /// header; batch markers name the nftables subsystem.
    fn header(&mut self, ty: u16, flags: u16, family: u8) -> usize {
        let at = self.buf.len();
        self.seq = self.seq.wrapping_add(1);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        let res_id = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn strz(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn close_nest(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// A netfilter netlink socket, in this process's network namespace or in a
/// named one (tests and benches run the kernel side in namespaces).
pub struct Socket {
    fd: OwnedFd,
    seq: std::sync::atomic::AtomicU32,
}

impl Socket {
    /// Opens the socket; `netns` is a namespace file such as
    /// `/run/netns/NAME`.
    pub fn open(netns: Option<&Path>) -> Result<Self, NetlinkError> {
        let Some(path) = netns else {
            return Self::open_here();
        };
        let path = path.to_path_buf();
        // setns changes the calling thread only: a short-lived thread enters
        // the namespace and opens the socket, which stays bound to it.
        let shown = path.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| NetlinkError::Namespace {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetlinkError::Namespace {
                    path: path.clone(),
                    detail: e.to_string(),
                }
            })?;
            Self::open_here()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetlinkError::Namespace {
                path: shown,
                detail: "the thread entering it failed".into(),
            })
        })
    }

    fn open_here() -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(NetlinkError::Open)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Open)?;
        // Forcing the size needs CAP_NET_ADMIN, which changing the firewall
        // needs anyway; without it, the usual limit applies.
        if socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(10, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Socket {
            fd,
            seq: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A batch numbered after every earlier one of this socket, so a late
    /// answer to an earlier batch is never taken for one of this batch.
    pub fn batch(&self) -> Batch {
        let first = self
            .seq
            .fetch_add(1 << 24, std::sync::atomic::Ordering::Relaxed);
        Batch::new(first)
    }

    /// Sends the batch and waits for the kernel to acknowledge every
    /// request in it; the first refusal is the error (the kernel then
    /// applied none of the batch).
    pub fn commit(&self, batch: Batch) -> Result<(), NetlinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (buf, requests) = batch.finish();
        // The whole batch must fit the send buffer, as one datagram.
        if socket::setsockopt(&self.fd, sockopt::SndBufForce, &(buf.len() + 4_096)).is_err() {
            let _ = socket::setsockopt(&self.fd, sockopt::SndBuf, &(buf.len() + 4_096));
        }
        let sent = socket::send(self.fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(|errno| {
            NetlinkError::Send {
                bytes: buf.len(),
                errno,
            }
        })?;
        if sent != buf.len() {
            return Err(NetlinkError::Send {
                bytes: buf.len(),
                errno: Errno::EMSGSIZE,
            });
        }
        self.answers(&requests)
    }

    fn answers(&self, requests: &[(u32, String)]) -> Result<(), NetlinkError> {
        let (Some(first), Some(last)) = (requests.first(), requests.last()) else {
            return Ok(());
        };
        let what = |seq: u32| {
            requests
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| "apply a batch".into())
        };
        let mut pending = requests.len();
        let mut refused: Option<NetlinkError> = None;
        let mut buf = vec![0u8; 256 * 1024];
        while pending > 0 {
            // Once refused, the rest is drained without waiting.
            let flags = if refused.is_some() {
                MsgFlags::MSG_DONTWAIT
            } else {
                MsgFlags::empty()
            };
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, flags) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    return Err(
                        refused.unwrap_or_else(|| NetlinkError::NoAnswer { what: what(last.0) })
                    )
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(refused.unwrap_or(NetlinkError::Receive(errno))),
            };
            for (seq, code) in acks(&buf[..n]) {
                // An error may also answer a batch marker.
                let request = requests.iter().any(|(s, _)| *s == seq);
                if request {
                    pending = pending.saturating_sub(1);
                } else if seq != first.0.wrapping_sub(1) && seq != last.0.wrapping_add(1) {
                    continue;
                }
                if code != 0 && refused.is_none() {
                    refused = Some(NetlinkError::Refused {
                        what: what(seq),
                        errno: Errno::from_raw(-code),
                    });
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The (sequence number, error code) of every `NLMSG_ERROR` message in a
/// datagram; code 0 is an acknowledgement.
fn acks(mut data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let u32_at = |d: &[u8], i: usize| u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        if ty == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let code = u32_at(data, NLMSG_HDRLEN) as i32;
            // The header of the request answered follows the code.
            let seq = if len >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
                u32_at(data, NLMSG_HDRLEN + 4 + 8)
            } else {
                u32_at(data, 8)
            };
            out.push((seq, code));
        }
        let step = (len + 3) & !3;
        data = data.get(step..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(d: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
    }

    #[test]
    fn a_batch_is_framed_and_split_under_the_attribute_limit() {
        let mut b = Batch::new(100);
        b.elements(
            Verb::Delete,
            "fleetban",
            "host4",
            [("192.0.2.1".parse().expect("ip"), None)],
        );
        let many = (0..10_000u32).map(|i| (IpAddr::from(i.to_be_bytes()), Some(60_000)));
        b.elements(Verb::Add, "fleetban", "host4", many);
        assert!(b.len() > 2, "split over several messages: {}", b.len());
        let (buf, requests) = b.finish();
        assert_eq!(requests.len(), b_len_of(&buf) - 2);
        // Walk the messages: begin, requests, end; lengths add up.
        let mut at = 0;
        let mut types = Vec::new();
        while at < buf.len() {
            let len = u32_at(&buf, at) as usize;
            assert!(len >= 20 && len.is_multiple_of(4), "message length {len}");
            types.push(u16::from_ne_bytes([buf[at + 4], buf[at + 5]]));
            at += len;
        }
        assert_eq!(at, buf.len());
        assert_eq!(types.first(), Some(&NFNL_MSG_BATCH_BEGIN));
        assert_eq!(types.last(), Some(&NFNL_MSG_BATCH_END));
        assert_eq!(types[1], (10 << 8) | NFT_MSG_DELSETELEM);
        assert!(types[2..types.len() - 1]
            .iter()
            .all(|t| *t == (10 << 8) | NFT_MSG_NEWSETELEM));
        assert_eq!(requests[0].1, "delete 1 elements in set host4");
        assert!(requests[1].1.starts_with("add "), "{:?}", requests[1]);
        // Sequence numbers follow the batch's first one.
        assert_eq!(requests[0].0, 102);
    }

    fn b_len_of(buf: &[u8]) -> usize {
        let mut at = 0;
        let mut n = 0;
        while at < buf.len() {
            at += u32_at(buf, at) as usize;
            n += 1;
        }
        n
    }

    #[test]
    fn an_element_carries_its_key_and_timeout() {
        let mut b = Batch::new(0);
        b.elements(
            Verb::Add,
            "t",
            "s",
            [("192.0.2.7".parse().expect("ip"), Some(1_500))],
        );
        let (buf, _) = b.finish();
        let begin = u32_at(&buf, 0) as usize;
        let msg = &buf[begin..begin + u32_at(&buf, begin) as usize];
        let needle_key = [192u8, 0, 2, 7];
        assert!(msg.windows(4).any(|w| w == needle_key));
        assert!(msg.windows(8).any(|w| w == 1_500u64.to_be_bytes()));
        // Deleting sends no timeout.
        let mut d = Batch::new(0);
        d.elements(
            Verb::Delete,
            "t",
            "s",
            [("2001:db8::1".parse().expect("ip"), Some(1_500))],
        );
        let (buf, _) = d.finish();
        assert!(!buf.windows(8).any(|w| w == 1_500u64.to_be_bytes()));
    }

    #[test]
    fn answers_are_read_from_a_datagram() {
        let mut d = Vec::new();
        for (seq, code) in [(7u32, 0i32), (8, -2)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&code.to_ne_bytes());
            // the request's header
            d.extend_from_slice(&20u32.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
        }
        assert_eq!(acks(&d), vec![(7, 0), (8, -2)]);
        assert!(acks(&d[..20]).is_empty());
        assert!(acks(&[0xff; 40]).is_empty());
    }
}

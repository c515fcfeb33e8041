//! The agent's own nfnetlink client for the two things `nft` does slowly on large interval sets: changing a few
//! elements, and asking whether one element is there. Both go straight to the kernel in one message batch, with no
//! set dump: with nftables 1.0.x, `nft add element` and even `nft list chain` first dump every element of the
//! table's sets (`GETSETELEM` with `NLM_F_DUMP`; seconds at a million CIDRs, see BENCHMARKS.md).
//!
//! Why our own encoder: the Rust nftables crates do not fit. `rustables` (0.8) is GPL-3.0-or-later, which our
//! licence policy (deny.toml) refuses; `nftnl` (0.7) has no element flags, so it cannot write the end of an
//! interval; `nftnl-sys` links the C libnftnl, one more system library on every node. What we send is three message
//! types with a handful of attributes (the kernel's `include/uapi/linux/netfilter/nf_tables.h`), about 150 lines.
//!
//! Every call runs on a thread of its own that enters the agent's network namespace first (tests; production agents
//! use the host's), so no other task ever runs in the wrong namespace, and is bounded by the agent's nft timeout.

use std::time::Duration;

// nfnetlink and nf_tables numbers (linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h, linux/netlink.h).
const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// libnftnl's user data type of an element's comment (`NFTNL_UDATA_SET_ELEM_COMMENT`), which nft prints.
const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// Elements per message: a message stays well under a page set, as nft's own batches do.
const ELEMENTS_PER_MESSAGE: usize = 512;
const ENOENT: i32 = 2;

/// Why a netlink call failed. A failed batch changed nothing: the kernel applies a batch all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netfilter netlink socket{}: {message}", netns.as_ref().map(|n| format!(" in network namespace {n}")).unwrap_or_default())]
    Socket { netns: Option<String>, message: String },
    #[error("the kernel refused the change ({}: {message})", std::io::Error::from_raw_os_error(*errno))]
    Refused { errno: i32, message: String },
    #[error("no answer from the kernel within {seconds} s")]
    Timeout { seconds: u64 },
    #[error("talking to the kernel: {message}")]
    Io { message: String },
}

impl NetlinkError {
    pub fn category(&self) -> &'static str {
        match self {
            NetlinkError::Socket { .. } => "socket",
            NetlinkError::Refused { .. } => "refused",
            NetlinkError::Timeout { .. } => "timeout",
            NetlinkError::Io { .. } => "io",
        }
    }
}

/// One element of an interval set: a key in network byte order, the end of an interval or a start, and a comment
/// (which `nft list` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub end: bool,
    pub comment: Option<String>,
}

/// Additions or deletions of elements of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub set: String,
    pub add: bool,
    pub elements: Vec<Element>,
}

/// Builds netlink messages into one buffer.
struct Builder {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the messages that asked for an answer.
    acked: Vec<u32>,
}

impl Builder {
    fn new() -> Builder {
        Builder { buf: Vec::with_capacity(4096), seq: 1, acked: Vec::new() }
    }

    /// Starts a message (header and nfgenmsg); returns its offset for [`Builder::end`].
    fn begin(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.seq += 1;
        if flags & NLM_F_ACK != 0 {
            self.acked.push(self.seq);
        }
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by end()
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.buf.extend_from_slice(&[family, 0]); // nfgen_family, version NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn end(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn string(&mut self, kind: u16, text: &str) {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    /// One set-element message: table, set, and the elements.
    fn elements(&mut self, kind: u16, flags: u16, table: &str, set: &str, elements: &[Element]) {
        let msg = self.begin((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, NFPROTO_INET, 0);
        self.string(NFTA_SET_ELEM_LIST_TABLE, table);
        self.string(NFTA_SET_ELEM_LIST_SET, set);
        let list = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for element in elements {
            let item = self.nest(NFTA_LIST_ELEM);
            let key = self.nest(NFTA_SET_ELEM_KEY);
            self.attr(NFTA_DATA_VALUE, &element.key);
            self.nest_end(key);
            if element.end {
                self.attr(NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
            }
            if let Some(comment) = &element.comment {
                // One TLV (type, length, value with its NUL); nft keeps comments to 128 bytes.
                let text: String = comment.chars().take(127).collect();
                let mut udata = vec![UDATA_SET_ELEM_COMMENT, u8::try_from(text.len() + 1).unwrap_or(u8::MAX)];
                udata.extend_from_slice(text.as_bytes());
                udata.push(0);
                self.attr(NFTA_SET_ELEM_USERDATA, &udata);
            }
            self.nest_end(item);
        }
        self.nest_end(list);
        self.end(msg);
    }
}

/// The bytes of one transaction: deletions and additions of elements of `table`'s sets, in the order given. The
/// kernel applies it all or nothing; an addition of an element that is there already, or a deletion of one that is
/// not, fails the whole batch (so a kernel that is not what the agent believes is never patched, but replaced).
pub fn batch(table: &str, changes: &[Change]) -> (Vec<u8>, Vec<u32>) {
    let mut b = Builder::new();
    let start = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    b.end(start);
    for change in changes {
        let (kind, flags) = if change.add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        for chunk in change.elements.chunks(ELEMENTS_PER_MESSAGE) {
            b.elements(kind, flags, table, &change.set, chunk);
        }
    }
    let end = b.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    b.end(end);
    (b.buf, b.acked)
}

/// The bytes of a point query (`GETSETELEM` without `NLM_F_DUMP`) for one element.
fn query(table: &str, set: &str, element: &Element) -> (Vec<u8>, Vec<u32>) {
    let mut b = Builder::new();
    b.elements(NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_ACK, table, set, std::slice::from_ref(element));
    (b.buf, b.acked)
}

/// Where the agent's netlink calls go.
#[derive(Debug, Clone)]
pub struct Netlink {
    pub netns: Option<String>,
    pub timeout: Duration,
}

impl Netlink {
    /// Sends one batch of changes; Ok once the kernel acknowledged every message.
    pub async fn apply(&self, table: &str, changes: &[Change]) -> Result<(), NetlinkError> {
        let (bytes, acked) = batch(table, changes);
        self.exchange(bytes, acked).await.map(drop)
    }

    /// Whether `set` of `table` holds `element` (false when the table or the set does not exist), asked with a
    /// point query: nothing is dumped.
    pub async fn holds(&self, table: &str, set: &str, element: &Element) -> Result<bool, NetlinkError> {
        let (bytes, acked) = query(table, set, element);
        match self.exchange(bytes, acked).await {
            Ok(answers) => Ok(answers > 0),
            Err(NetlinkError::Refused { errno: ENOENT, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `bytes` and reads until every message in `acked` is acknowledged; returns how many messages other
    /// than acknowledgements came back (a point query's answer).
    async fn exchange(&self, bytes: Vec<u8>, acked: Vec<u32>) -> Result<usize, NetlinkError> {
        let (netns, timeout) = (self.netns.clone(), self.timeout);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: entering a network namespace changes the calling thread for good.
        std::thread::Builder::new()
            .name("jpki-netlink".into())
            .spawn(move || {
                let _ = tx.send(socket::exchange(netns.as_deref(), &bytes, &acked, timeout));
            })
            .map_err(|e| NetlinkError::Io { message: format!("cannot start a thread: {e}") })?;
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetlinkError::Io { message: "the netlink thread ended without an answer".into() }),
            Err(_) => Err(NetlinkError::Timeout { seconds: timeout.as_secs() }),
        }
    }
}

mod socket {
    //! The blocking socket calls (libc), on the caller's own thread.
    use super::{NETLINK_NETFILTER, NLMSG_ERROR, NetlinkError};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    fn last_error() -> String {
        std::io::Error::last_os_error().to_string()
    }

    fn enter(netns: &str) -> Result<(), NetlinkError> {
        let path = if netns.contains('/') { netns.to_string() } else { format!("/run/netns/{netns}") };
        let file = std::fs::File::open(&path).map_err(|e| NetlinkError::Socket { netns: Some(netns.into()), message: format!("{path}: {e}") })?;
        // SAFETY: setns on a valid namespace file descriptor; it affects only this thread, which ends after the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetlinkError::Socket { netns: Some(netns.into()), message: format!("setns: {}", last_error()) });
        }
        Ok(())
    }

    fn open(netns: Option<&str>, send_size: usize, timeout: Duration) -> Result<OwnedFd, NetlinkError> {
        if let Some(ns) = netns {
            enter(ns)?;
        }
        let fail = |what: &str| NetlinkError::Socket { netns: netns.map(Into::into), message: format!("{what}: {}", last_error()) };
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(fail("socket"));
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let set = |option: i32, value: &[u8]| {
            // SAFETY: value points to a live buffer of the given length.
            unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, option, value.as_ptr().cast(), value.len() as libc::socklen_t) }
        };
        // A whole batch goes in one send: the buffer must hold it (SO_SNDBUFFORCE needs CAP_NET_ADMIN, which the
        // agent has; the plain option is capped by net.core.wmem_max).
        let size = i32::try_from(send_size + 65536).unwrap_or(i32::MAX).to_ne_bytes();
        if set(libc::SO_SNDBUFFORCE, &size) != 0 {
            set(libc::SO_SNDBUF, &size);
        }
        let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: libc::suseconds_t::from(timeout.subsec_micros()) };
        // SAFETY: timeval is plain data; viewing it as bytes for setsockopt.
        let tv_bytes = unsafe { std::slice::from_raw_parts((&raw const tv).cast::<u8>(), std::mem::size_of::<libc::timeval>()) };
        if set(libc::SO_RCVTIMEO, tv_bytes) != 0 {
            return Err(fail("SO_RCVTIMEO"));
        }
        // SAFETY: zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t) } != 0 {
            return Err(fail("bind"));
        }
        Ok(fd)
    }

    pub(super) fn exchange(netns: Option<&str>, bytes: &[u8], acked: &[u32], timeout: Duration) -> Result<usize, NetlinkError> {
        let fd = open(netns, bytes.len(), timeout)?;
        // SAFETY: bytes is a live buffer of the given length.
        let sent = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 || sent as usize != bytes.len() {
            return Err(NetlinkError::Io { message: format!("send: {}", last_error()) });
        }
        let deadline = Instant::now() + timeout;
        let mut pending: std::collections::BTreeSet<u32> = acked.iter().copied().collect();
        let mut answers = 0;
        let mut buf = vec![0u8; 1 << 16];
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(NetlinkError::Timeout { seconds: timeout.as_secs() });
            }
            // SAFETY: buf is a live, writable buffer of the given length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                    return Err(NetlinkError::Timeout { seconds: timeout.as_secs() });
                }
                return Err(NetlinkError::Io { message: format!("recv: {e}") });
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(NetlinkError::Io { message: format!("malformed answer (length {len} of {})", rest.len()) });
                }
                if kind == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                    if code != 0 {
                        return Err(NetlinkError::Refused { errno: -code, message: format!("message {seq}") });
                    }
                    pending.remove(&seq);
                } else {
                    answers += 1;
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_asks_for_an_answer_to_each_element_message() {
        let elements: Vec<Element> = (0..1030u32).map(|i| Element { key: i.to_be_bytes().to_vec(), end: i % 2 == 1, comment: None }).collect();
        let (bytes, acked) = batch("t", &[Change { set: "s".into(), add: true, elements }]);
        // 1,030 elements: three messages of at most 512, each acknowledged; begin and end are not.
        assert_eq!(acked.len(), 3);
        let mut kinds = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(rest[4..6].try_into().unwrap()));
            rest = &rest[len..];
        }
        assert_eq!(kinds, vec![0x10, 0x0a0c, 0x0a0c, 0x0a0c, 0x11]);
    }

    #[test]
    fn an_element_carries_its_key_its_end_flag_and_its_comment() {
        let (bytes, _) =
            batch("t", &[Change { set: "s".into(), add: false, elements: vec![Element { key: vec![10, 0, 0, 0], end: true, comment: Some("c".into()) }] }]);
        let msg = &bytes[20..];
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 0x0a0e, "a deletion");
        let body = &msg[20..];
        // table "t", set "s", then the nested list: elem > key > value 10.0.0.0, flags (big-endian 1), comment.
        let needle_key = [8u8, 0, 1, 0, 10, 0, 0, 0];
        assert!(body.windows(8).any(|w| w == needle_key), "{body:?}");
        let needle_flags = [8u8, 0, 3, 0, 0, 0, 0, 1];
        assert!(body.windows(8).any(|w| w == needle_flags), "{body:?}");
        let needle_comment = [8u8, 0, 6, 0, 0, 2, b'c', 0];
        assert!(body.windows(8).any(|w| w == needle_comment), "{body:?}");
    }
}

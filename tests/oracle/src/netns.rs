//! The few libc calls std does not offer: entering a network namespace, and connecting from a chosen source. The
//! tests' topology helpers (tests/support/netns.rs) use them too.
use std::ffi::{c_int, c_long, c_void};
use std::io::{Error, Result};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

unsafe extern "C" {
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
}
const CLONE_NEWNET: c_int = 0x4000_0000;
const SOCK_STREAM: c_int = 1;
const SOCK_CLOEXEC: c_int = 0o2_000_000;
const SOL_SOCKET: c_int = 1;
const SO_SNDTIMEO: c_int = 21; // asm-generic value (x86_64, aarch64, riscv64); bounds a blocking connect

pub fn check(rc: c_int) -> Result<c_int> {
    if rc < 0 { Err(Error::last_os_error()) } else { Ok(rc) }
}

/// Moves the calling thread into the network namespace `ip netns add` created.
pub fn enter_netns(name: &str) -> Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))?;
    check(unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) }).map(drop)
}

/// `struct sockaddr_in` / `sockaddr_in6` as bytes (family in host order, port and address in network order).
pub fn sockaddr(addr: SocketAddr) -> (c_int, Vec<u8>) {
    let mut raw = Vec::with_capacity(28);
    match addr {
        SocketAddr::V4(a) => {
            raw.extend(2u16.to_ne_bytes());
            raw.extend(a.port().to_be_bytes());
            raw.extend(a.ip().octets());
            raw.extend([0; 8]);
            (2, raw)
        }
        SocketAddr::V6(a) => {
            raw.extend(10u16.to_ne_bytes());
            raw.extend(a.port().to_be_bytes());
            raw.extend([0; 4]);
            raw.extend(a.ip().octets());
            raw.extend([0; 4]);
            (10, raw)
        }
    }
}

/// A TCP connect from `src` (port chosen by the kernel) to `dst`, giving up after `timeout`.
pub fn connect_from(src: SocketAddr, dst: SocketAddr, timeout: Duration) -> Result<()> {
    let (family, src) = sockaddr(src);
    let (_, dst) = sockaddr(dst);
    let fd = check(unsafe { socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv: [c_long; 2] = [timeout.as_secs() as c_long, timeout.subsec_micros() as c_long];
    let tv_len = std::mem::size_of_val(&tv) as u32;
    check(unsafe { setsockopt(fd.as_raw_fd(), SOL_SOCKET, SO_SNDTIMEO, tv.as_ptr().cast(), tv_len) })?;
    check(unsafe { bind(fd.as_raw_fd(), src.as_ptr().cast(), src.len() as u32) })?;
    check(unsafe { connect(fd.as_raw_fd(), dst.as_ptr().cast(), dst.len() as u32) }).map(drop)
}

/// Runs `f` on a fresh thread inside network namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
            f()
        })
        .join()
        .unwrap()
    })
}

/// What a connect came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    TimedOut,
    Error(String),
}

/// A connect from `src` to `dst` inside namespace `ns`, given up after `timeout`; a namespace that is gone (the
/// test ended while the checker sampled) is an error, not a panic.
pub fn connect_in(ns: &str, src: std::net::IpAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(e) = enter_netns(ns) {
                return Outcome::Error(format!("setns into {ns}: {e}"));
            }
            match connect_from(SocketAddr::new(src, 0), dst, timeout) {
                Ok(()) => Outcome::Connected,
                // Linux reports a connect cut short by SO_SNDTIMEO as EINPROGRESS.
                Err(e) if matches!(e.raw_os_error(), Some(115 | 110 | 11)) => Outcome::TimedOut,
                Err(e) => Outcome::Error(e.to_string()),
            }
        })
        .join()
        .unwrap_or_else(|_| Outcome::Error("the probe thread panicked".into()))
    })
}

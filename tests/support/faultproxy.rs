//! The fault proxy in front of a test's API server (`kube-testenv faultproxy`, tests/testenv/faultproxy.go): a
//! kubeconfig through it, faults set while it runs (a share of requests answered 500 or 429, the rest late), and
//! what it saw, for tests/faults_more.rs.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::{OwnControlPlane, path_str, repo_root};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct FaultProxy {
    child: Child,
    control_port: u16,
    /// A copy of the control plane's kubeconfig whose server is the proxy.
    pub kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// What the proxy counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub injected_500: u64,
    pub injected_429: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            requests: self.requests - earlier.requests,
            injected_500: self.injected_500 - earlier.injected_500,
            injected_429: self.injected_429 - earlier.injected_429,
        }
    }
}

impl FaultProxy {
    pub fn start(cp: &OwnControlPlane) -> FaultProxy {
        let kc = std::fs::read_to_string(&cp.kubeconfig).unwrap();
        let server = kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
        let mut child = Command::new(repo_root().join("target/testenv/kube-testenv"))
            .args(["faultproxy", "--dir", path_str(cp.dir.path()), "--upstream", &server])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let mut words = line.split_whitespace();
        let (Some(proxy), Some(control)) = (words.next(), words.next()) else { panic!("faultproxy did not start: {line:?}") };
        let control_port = control.rsplit(':').next().unwrap().parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kc.replace(&server, proxy)).unwrap();
        FaultProxy { child, control_port, kubeconfig, _dir: dir }
    }

    /// Shares of requests answered 500 and 429 (0..1), and how late the others are forwarded.
    pub fn set(&self, error_500: f64, error_429: f64, delay: Duration) {
        let body = format!(r#"{{"error500": {error_500}, "error429": {error_429}, "delayMs": {}}}"#, delay.as_millis());
        let reply = self.request("PUT", "/faults", &body);
        assert!(reply.starts_with("HTTP/1.1 200"), "faultproxy refused the faults: {reply}");
    }

    pub fn counts(&self) -> Counts {
        let reply = self.request("GET", "/stats", "");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("faultproxy stats {reply:?}: {e}"));
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Counts { requests: n("requests"), injected_500: n("injected500"), injected_429: n("injected429") }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.control_port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

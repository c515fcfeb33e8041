//! A network namespace whose only way to the API server is a link to 10.0.0.1 (an address of the API server's
//! certificate), where a proxy of the test forwards to the API server on 127.0.0.1: taking the link down cuts the
//! namespace's processes (an agent) off the API server, and nothing else. For tests/enforcement.rs and the fault
//! tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::netns::{output, run};
use std::path::Path;

pub struct CutOff {
    pub ns: String,
    host_if: String,
    /// Whether the namespace is this cut-off's own (deleted on drop) or a test's (left).
    own_ns: bool,
    pub kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl CutOff {
    /// A namespace of its own, reaching the API server of `kubeconfig` through the proxy.
    pub async fn new(tag: &str, kubeconfig: &Path) -> CutOff {
        let ns = format!("jpki-cut-{tag}-{}", std::process::id());
        let _ = output(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns]);
        Self::join(&ns, tag, kubeconfig, true).await
    }

    /// An existing namespace (a test's router, say) given a way to the API server of `kubeconfig`.
    pub async fn into(ns: &str, tag: &str, kubeconfig: &Path) -> CutOff {
        Self::join(ns, tag, kubeconfig, false).await
    }

    async fn join(ns: &str, tag: &str, kubeconfig: &Path, own_ns: bool) -> CutOff {
        let host_if = format!("jc{tag}{}", std::process::id() % 100_000);
        let _ = output(&["ip", "link", "del", &host_if]);
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", "jcut0", "netns", ns]);
        run(&["ip", "addr", "add", "10.0.0.1/30", "dev", &host_if]);
        run(&["ip", "link", "set", &host_if, "up"]);
        for args in [&["ip", "addr", "add", "10.0.0.2/30", "dev", "jcut0"][..], &["ip", "link", "set", "jcut0", "up"], &["ip", "link", "set", "lo", "up"]] {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend(args);
            run(&full);
        }
        let listener = std::net::TcpListener::bind("10.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let kc = std::fs::read_to_string(kubeconfig).unwrap();
        let server = kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
        let upstream = server.trim_start_matches("https://").to_string();
        // The proxy runs on a thread and runtime of its own: a test that blocks its runtime (probing with real
        // connects) must not stall the agent's traffic.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kc.replace(&server, &format!("https://10.0.0.1:{port}"))).unwrap();
        CutOff { ns: ns.to_string(), host_if, own_ns, kubeconfig: path, _dir: dir }
    }

    /// Cuts the namespace off the API server both ways: the host's end of the link goes down (removing only the
    /// namespace's route would still let the API server's pushes in).
    pub fn cut(&self) {
        run(&["ip", "link", "set", &self.host_if, "down"]);
    }

    /// Brings the link back (the kernel restores the host's route to the namespace with it).
    pub fn heal(&self) {
        run(&["ip", "link", "set", &self.host_if, "up"]);
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        let _ = output(&["ip", "link", "del", &self.host_if]);
        if self.own_ns {
            let _ = output(&["ip", "netns", "del", &self.ns]);
        }
    }
}

//! `jpki-access agent`: applies one environment's allowlist to nftables on an edge node and reports the digest it
//! applied.
//!
//! - It reads only the ConfigMaps of the allowlist namespace and applies a set only when the index and every shard
//!   agree (`allowlist::assemble`): never a half-written set.
//! - Every change is a **full atomic replace**: the whole ruleset in one `nft -f` transaction, so there is no moment
//!   without rules and no set is ever listed back from the kernel (with nft 1.0.x an `add element` on a large
//!   interval set dumps the whole set first; see BENCHMARKS.md for the numbers behind this choice).
//! - What was applied is known without a dump: the digest is written as the comment of the `input` chain, and
//!   `nft list chain` reads it back (a chain listing shows rules, not set elements).
//! - Fail static: when the API server is unreachable the watch retries and the rules stay; on restart the agent
//!   compares the kernel's digest with the published one and replaces only if they differ (never a flush first);
//!   on shutdown the rules stay, unless `--remove-on-exit`.
//! - Drift: at start and on every resync the agent lists its table and compares it with what it applied
//!   (`drift`); an element or rule changed by hand is replaced by the allowlist and reported (`drift` in the
//!   report, and a warning in the log).

pub mod allowlist;
pub mod drift;

use crate::planner::children::{ALLOWLIST_LABEL, ENVIRONMENT_LABEL};
use crate::planner::nft::{render_removal, render_ruleset, table_name};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// Label of the agents' report ConfigMaps (value: the environment name); the controller counts them.
pub const REPORT_LABEL: &str = "access.jpki.dev/agent-report";

#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: String,
    pub namespace: String,
    pub node: String,
    /// Apply inside this network namespace (`ip netns exec`), for tests; production agents use the host's.
    pub netns: Option<String>,
    pub nft: PathBuf,
    pub remove_on_exit: bool,
    pub resync: Duration,
    /// Test hook: while this file exists, the rendered ruleset gets a line nft refuses.
    pub break_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {0}")]
    Client(#[source] kube::Error),
}

/// The report name of one agent.
pub fn report_name(environment: &str, node: &str) -> String {
    format!("jpki-agent-{environment}-{node}")
}

pub async fn run(settings: Settings) -> Result<(), Error> {
    let client = Client::try_default().await.map_err(Error::Client)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.namespace);
    let config = watcher::Config::default().labels(&format!("{ENVIRONMENT_LABEL}={},{ALLOWLIST_LABEL}", settings.environment));
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let poke = changed.clone();
    let watch = reflector::reflector(writer, watcher(api.clone(), config)).backoff(crate::controller::stores::watch_backoff(Duration::from_secs(5))).for_each(
        move |event| {
            if let Err(e) = &event {
                tracing::warn!(error = %e, "watch error (rules stay as they are); retrying");
            }
            poke.notify_one();
            async {}
        },
    );
    tokio::spawn(watch);
    let ready = store.clone();
    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = synced.clone();
    let poke = changed.clone();
    tokio::spawn(async move {
        let _ = ready.wait_until_ready().await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        poke.notify_one();
    });

    let mut nft = Nft { settings: settings.clone() };
    let mut applied = nft.applied_digest().await;
    tracing::info!(environment = %settings.environment, node = %settings.node, applied = ?applied, "agent started; the kernel's rules are kept until a complete allowlist differs");
    let mut last_report: Option<serde_json::Value> = None;
    // Verify the kernel's table on the first complete allowlist and on every resync; remember the shape of the
    // table as applied (without its elements) to compare the next listing with.
    let mut verify = true;
    let mut fingerprint: Option<String> = None;
    let mut last_drift = String::new();
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(settings.resync) => {
                // The kernel may have been changed behind our back (a flush, a reboot of the table): re-read.
                applied = nft.applied_digest().await;
                verify = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // fold a burst of shard events into one apply
        if !synced.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let config_maps: Vec<ConfigMap> = store.state().iter().map(|c| (**c).clone()).collect();
        let list = match allowlist::assemble(&settings.environment, &config_maps) {
            Ok(list) => list,
            Err(incomplete) => {
                tracing::info!(reason = %incomplete, "allowlist not complete; keeping the current rules");
                continue;
            }
        };
        let mut error = None;
        let wanted = tag(&list);
        if verify && applied.as_deref() == Some(wanted.as_str()) {
            match nft.list(false).await.and_then(|json| drift::parse_listing(&json)) {
                Ok(listed) => {
                    let found = drift::compare(&listed, &list.v4, &list.v6, fingerprint.as_deref());
                    if found.is_none() {
                        fingerprint.get_or_insert(listed.fingerprint);
                    } else {
                        tracing::warn!(drift = %found, "the kernel's table differs from the allowlist applied (changed by hand?); replacing it");
                        last_drift =
                            format!("{}: {found}; replaced", jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()));
                        applied = None;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the table to check it for drift; will retry on the next resync")
                }
            }
        }
        verify = false;
        if applied.as_deref() != Some(wanted.as_str()) {
            match nft.apply(&list).await {
                Ok(()) => {
                    tracing::info!(digest = %list.digest, v4 = list.v4.len(), v6 = list.v6.len(), "applied");
                    applied = Some(wanted);
                    // The shape as applied, from a terse listing (no set elements, so no set dump).
                    fingerprint = nft.list(true).await.and_then(|json| drift::parse_listing(&json)).map(|l| l.fingerprint).ok();
                }
                Err(e) => {
                    tracing::error!(digest = %list.digest, error = %e, "apply failed; the previous rules stay in force");
                    error = Some(e);
                }
            }
        }
        let report = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": report_name(&settings.environment, &settings.node), "namespace": settings.namespace,
                         "labels": {REPORT_LABEL: settings.environment, "app.kubernetes.io/managed-by": "jpki-access-agent"}},
            "data": {"environment": settings.environment, "node": settings.node,
                     "appliedDigest": applied.as_deref().map(digest_of_tag).unwrap_or_default(), "publishedDigest": list.digest,
                     "error": error.clone().unwrap_or_default(), "drift": last_drift}
        });
        if last_report.as_ref() != Some(&report) {
            let pp = PatchParams::apply(&format!("jpki-access-agent/{}", settings.node)).force();
            match api.patch(&report_name(&settings.environment, &settings.node), &pp, &Patch::Apply(&report)).await {
                Ok(_) => last_report = Some(report),
                Err(e) => tracing::warn!(error = %e, "report not written; will retry"),
            }
        }
    }
    if settings.remove_on_exit {
        tracing::info!("removing the table (--remove-on-exit)");
        if let Err(e) = nft.run(&render_removal(&settings.environment)).await {
            tracing::error!(error = %e, "removal failed");
        }
    } else {
        tracing::info!("stopping; the rules stay in force");
    }
    Ok(())
}

/// What the kernel must hold: the allowlist's digest and the filtered ports (a change of ports alone changes no
/// digest, yet must be applied). Kept in the comment of the input chain.
fn tag(list: &allowlist::Allowlist) -> String {
    let mut ports: Vec<String> =
        list.ports.iter().map(|p| format!("{}/{}", if p.protocol == crate::api::environment::Protocol::Udp { "UDP" } else { "TCP" }, p.port)).collect();
    ports.sort();
    format!("{} ports {}", list.digest, ports.join(","))
}

/// The digest part of a tag.
fn digest_of_tag(tag: &str) -> String {
    tag.split(" ports ").next().unwrap_or_default().to_string()
}

/// The nft binary, in the host's or a test's network namespace.
struct Nft {
    settings: Settings,
}

impl Nft {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = match &self.settings.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.settings.nft);
                c
            }
            None => tokio::process::Command::new(&self.settings.nft),
        };
        cmd.args(args);
        cmd
    }

    /// The digest in the comment of our `input` chain: read without listing any set.
    async fn applied_digest(&self) -> Option<String> {
        let table = table_name(&self.settings.environment);
        let out = self.command(&["list", "chain", "inet", &table, "input"]).output().await.ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().find_map(|l| l.trim().strip_prefix("comment \"jpki-access digest ")).map(|rest| rest.trim_end_matches('"').to_string())
    }

    async fn apply(&mut self, list: &allowlist::Allowlist) -> Result<(), String> {
        let mut ruleset = render_ruleset(&self.settings.environment, &list.v4, &list.v6, &list.ports);
        // Tag the input chain with the digest, so the next start knows what is applied without a set dump.
        ruleset = ruleset.replacen("\tchain input {\n", &format!("\tchain input {{\n\t\tcomment \"jpki-access digest {}\"\n", tag(list)), 1);
        if self.settings.break_file.as_ref().is_some_and(|f| f.exists()) {
            ruleset.push_str("this line is broken on purpose (test hook)\n");
        }
        self.run(&ruleset).await
    }

    /// `nft -j list table` of our table; `terse` leaves out set elements.
    async fn list(&self, terse: bool) -> Result<String, String> {
        let table = table_name(&self.settings.environment);
        let args: &[&str] = if terse { &["-t", "-j", "list", "table", "inet", &table] } else { &["-j", "list", "table", "inet", &table] };
        let out = self.command(args).output().await.map_err(|e| format!("cannot run {}: {e}", self.settings.nft.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).lines().take(3).collect::<Vec<_>>().join(" | "))
        }
    }

    /// `nft -f -`: one transaction, all or nothing.
    async fn run(&self, ruleset: &str) -> Result<(), String> {
        let mut child = self
            .command(&["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.settings.nft.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(ruleset.as_bytes()).await.map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child.wait_with_output().await.map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join(" | ")) }
    }
}

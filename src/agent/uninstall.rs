//! Whether the agent stops because its own DaemonSet was deleted (`helm uninstall`, `kubectl delete daemonset`).
//!
//! By default a stopping agent leaves its table in force: a restart, a rolling update, an eviction or a lost API
//! server must never open the protected ports (fail closed). An uninstall is the one stop where the rules must go,
//! or the node keeps dropping the protected ports for good with nobody left to change them. The agent watches its
//! DaemonSet from the start, because by the time its pod is told to stop, `helm uninstall` has usually deleted
//! the agent's service account and role too, and a question asked then would be refused: an established watch
//! has already seen the deletion. Anything short of having seen the DaemonSet and then seen it deleted (or being
//! deleted) keeps the rules.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What the watch last knew of the DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing yet (never listed, or the API server was not reachable).
    Unknown,
    Present,
    /// Present with a deletionTimestamp (foreground deletion: it stays until its pods are gone).
    Deleting,
    /// Listed or watched and not there.
    Gone,
}

/// What to do with the table when stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    Keep,
    Remove,
}

/// Remove only when the DaemonSet was once seen present and is now deleted or being deleted. A DaemonSet never
/// seen (a wrong name, no rights to read it, no API server) keeps the rules.
pub fn on_stop(seen_present: bool, now: Seen) -> OnStop {
    match (seen_present, now) {
        (true, Seen::Deleting | Seen::Gone) => OnStop::Remove,
        _ => OnStop::Keep,
    }
}

/// The watch of the agent's own DaemonSet (one object, by name: the role may name it).
pub struct OwnerWatch {
    state: Arc<AtomicU8>,
    seen_present: Arc<std::sync::atomic::AtomicBool>,
    pub namespace: String,
    pub name: String,
}

fn encode(seen: Seen) -> u8 {
    match seen {
        Seen::Unknown => 0,
        Seen::Present => 1,
        Seen::Deleting => 2,
        Seen::Gone => 3,
    }
}

fn decode(value: u8) -> Seen {
    match value {
        1 => Seen::Present,
        2 => Seen::Deleting,
        3 => Seen::Gone,
        _ => Seen::Unknown,
    }
}

fn seen_of(ds: &DaemonSet) -> Seen {
    if ds.metadata.deletion_timestamp.is_some() { Seen::Deleting } else { Seen::Present }
}

impl OwnerWatch {
    /// Starts watching `namespace/name`; the stream is spawned and retries with backoff.
    pub fn start(client: Client, namespace: &str, name: &str) -> OwnerWatch {
        let state = Arc::new(AtomicU8::new(encode(Seen::Unknown)));
        let seen_present = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let api: Api<DaemonSet> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (state_w, present_w) = (state.clone(), seen_present.clone());
        let mut listed_any = false;
        let stream = watcher(api, config).default_backoff().for_each(move |event| {
            let update = |seen: Seen| {
                if seen == Seen::Present {
                    present_w.store(true, Ordering::SeqCst);
                }
                state_w.store(encode(seen), Ordering::SeqCst);
            };
            match event {
                Ok(watcher::Event::Init) => listed_any = false,
                Ok(watcher::Event::InitApply(ds) | watcher::Event::Apply(ds)) => {
                    listed_any = true;
                    update(seen_of(&ds));
                }
                Ok(watcher::Event::InitDone) if !listed_any => update(Seen::Gone),
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => update(Seen::Gone),
                Err(e) => tracing::debug!(error = %e, "watch of the agent's DaemonSet; retrying"),
            }
            async {}
        });
        tokio::spawn(stream);
        OwnerWatch { state, seen_present, namespace: namespace.to_string(), name: name.to_string() }
    }

    pub fn on_stop(&self) -> OnStop {
        on_stop(self.seen_present.load(Ordering::SeqCst), decode(self.state.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::{OnStop, Seen, on_stop};

    #[test]
    fn the_rules_go_only_after_the_daemonset_was_seen_and_then_deleted() {
        assert_eq!(on_stop(true, Seen::Gone), OnStop::Remove);
        assert_eq!(on_stop(true, Seen::Deleting), OnStop::Remove);
        // A restart or rolling update: the DaemonSet is there.
        assert_eq!(on_stop(true, Seen::Present), OnStop::Keep);
        // No API server, no rights to read it, a wrong name: never seen, so kept.
        assert_eq!(on_stop(false, Seen::Unknown), OnStop::Keep);
        assert_eq!(on_stop(false, Seen::Gone), OnStop::Keep);
        assert_eq!(on_stop(true, Seen::Unknown), OnStop::Keep);
    }
}

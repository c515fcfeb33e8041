//! Fencing: a replica writes only while the Lease is its own and unexpired, as the API server shows it.
//!
//! The lease manager tells the loop when leadership changes, but only when its own task runs: a replica frozen past
//! its Lease (SIGSTOP, a stalled VM, a long GC pause of the node) wakes up still believing it leads, and its first
//! pass would write from a stale cache before the lease task notices the Lease is someone else's. So before a pass,
//! if the last confirmation is older than [`CONFIRM_EVERY`], the loop reads the Lease itself and skips the pass
//! unless it is held by this identity and not expired (tests/faults_more.rs, the frozen leader, failed without it).
//! The limit left: a freeze in the middle of a pass is not caught before that pass's remaining writes.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// How old a confirmation may be before a pass needs a fresh one: well under the Lease duration (15 s), and a frozen
/// replica's monotonic clock runs on while it is stopped, so any freeze longer than this is caught.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// Whether `lease` is held by `identity` and its term (renewTime + leaseDurationSeconds) has not ended at `now`.
pub fn held_by(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let (Some(holder), Some(renewed), Some(seconds)) = (&spec.holder_identity, &spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    holder == identity && renewed.0 + SignedDuration::from_secs(i64::from(seconds)) > now
}

/// The loop's fence for one Lease.
pub struct Fence {
    api: Api<Lease>,
    name: String,
    identity: String,
    confirmed_at: Option<Instant>,
}

impl Fence {
    pub fn new(client: &Client, namespace: &str, name: &str, identity: &str) -> Fence {
        Fence { api: Api::namespaced(client.clone(), namespace), name: name.to_string(), identity: identity.to_string(), confirmed_at: None }
    }

    /// Whether this replica may write now: a recent confirmation stands, else the Lease is read. A Lease that cannot
    /// be read does not confirm (fail closed: the pass waits).
    pub async fn may_write(&mut self) -> bool {
        if self.confirmed_at.is_some_and(|at| at.elapsed() < CONFIRM_EVERY) {
            return true;
        }
        let ours = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => held_by(&lease, &self.identity, Timestamp::now()),
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "cannot read the Lease to confirm leadership; the pass waits");
                false
            }
        };
        self.confirmed_at = ours.then(Instant::now);
        ours
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "l"},
            "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": seconds}}))
        .unwrap()
    }

    #[test]
    fn only_our_unexpired_lease_lets_us_write() {
        let now: Timestamp = "2026-12-07T10:00:10Z".parse().unwrap();
        assert!(held_by(&lease("a", "2026-12-07T10:00:00.000000Z", 15), "a", now));
        assert!(!held_by(&lease("b", "2026-12-07T10:00:00.000000Z", 15), "a", now), "someone else's");
        assert!(!held_by(&lease("a", "2026-12-07T09:59:50.000000Z", 15), "a", now), "expired: a frozen holder");
        assert!(!held_by(&Lease::default(), "a", now), "no spec");
    }
}

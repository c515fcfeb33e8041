//! Watch settings shared by the controller and the firewall agent (neither imports the other).

use kube::runtime::watcher;

/// The watches' backoff: exponential from 0.8 s with jitter, like kube-runtime's default (client-go's), but capped at
/// `max` instead of 30 s. After an outage of the API server the default's cap leaves a cache up to 30 s behind once
/// the server is back, and a re-list after "too old resource version" costs a second backoff (tests/faults.rs).
/// The controller (two replicas, 8 watches) uses 2 s; the agents, one per edge node, 5 s.
pub fn backoff(max: std::time::Duration) -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(800).min(max))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

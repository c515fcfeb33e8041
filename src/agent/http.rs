//! The agent's `/healthz` (the process runs), `/readyz` (a set is in force and the last nft call succeeded: with
//! nftables missing or failing the agent is not ready, and says why) and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Every metric of the agent (prefix `jpki_access_agent`), with bounded labels.
pub struct Metrics {
    pub registry: Registry,
    /// 1 while ready.
    pub ready: Gauge,
    /// 1 for what the kernel enforces now: nothing, closed, persisted, verified.
    pub enforcing: Family<StateLabel, Gauge>,
    /// Rulesets applied.
    pub applies: Counter,
    /// nft calls that failed, by why (missing, timeout, refused, io).
    pub nft_failures: Family<ReasonLabel, Counter>,
    /// Published sets refused, by why (`wire::allowlist::Refusal::category`).
    pub refused: Family<ReasonLabel, Counter>,
    /// CIDRs of the set in force.
    pub enforced_cidrs: Gauge,
    /// Serial of the set in force.
    pub enforced_serial: Gauge,
    /// Heartbeats (Lease renewals) that failed.
    pub heartbeat_failures: Counter,
    /// Changes to the table made behind the agent's back, found and replaced.
    pub drift: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("jpki_access_agent");
        let m = Metrics {
            ready: Gauge::default(),
            enforcing: Family::default(),
            applies: Counter::default(),
            nft_failures: Family::default(),
            refused: Family::default(),
            enforced_cidrs: Gauge::default(),
            enforced_serial: Gauge::default(),
            heartbeat_failures: Counter::default(),
            drift: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("ready", "1 while a set is in force and the last nft call succeeded", m.ready.clone());
        registry.register("enforcing", "What the kernel enforces: nothing, closed, persisted or verified", m.enforcing.clone());
        registry.register("applies", "Rulesets applied", m.applies.clone());
        registry.register("nft_failures", "nft calls that failed, by why", m.nft_failures.clone());
        registry.register("refused_allowlists", "Published sets refused, by why", m.refused.clone());
        registry.register("enforced_cidrs", "CIDRs of the set in force", m.enforced_cidrs.clone());
        registry.register("enforced_serial", "Serial of the set in force", m.enforced_serial.clone());
        registry.register("heartbeat_failures", "Heartbeats that could not be written", m.heartbeat_failures.clone());
        registry.register("drift", "Changes to the table made behind the agent's back, replaced", m.drift.clone());
        Metrics { registry, ..m }
    }
}

/// What the endpoints show.
#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    /// `None` when ready, else why not.
    pub not_ready: Mutex<Option<String>>,
}

impl Shared {
    pub fn set_ready(&self, why_not: Option<String>) {
        self.metrics.ready.set(i64::from(why_not.is_none()));
        if let Ok(mut r) = self.not_ready.lock() {
            *r = why_not;
        }
    }
}

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(ready)).route("/metrics", get(metrics)).with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP endpoint stopped");
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    match shared.not_ready.lock().map(|r| r.clone()) {
        Ok(None) => (StatusCode::OK, "ok".into()),
        Ok(Some(why)) => (StatusCode::SERVICE_UNAVAILABLE, why),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "state unavailable".into()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &shared.metrics.registry);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}

//! Writing what the planner decided about history and decisions: facts into the durable records
//! (`AccessRecord`), and each approval's verdict into its status (condition `Accepted`).
//!
//! A record is created with its first facts; later facts are added by a JSON merge patch of their keys only, so a
//! write never removes an event (the API server refuses that anyway: the CRD makes records append-only).

use super::apply::{Backoff, WRITE_CONCURRENCY, Writes, count_status, patch_status, status_key};
use super::stores::{OwnWrites, Stores};
use crate::api::approval::AccessApprovalStatus;
use crate::api::record::{AccessRecordSpec, RecordEvent};
use crate::api::{AccessApproval, AccessRecord};
use crate::planner::Plan;
use crate::planner::records::RecordWrite;
use crate::planner::status::condition;
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

/// Creates or extends one record with `events`; records the written version.
async fn write_record(api: &Api<AccessRecord>, own: &OwnWrites, first: &RecordWrite, events: BTreeMap<String, RecordEvent>) -> Result<(), kube::Error> {
    let record = AccessRecord::new(&first.name, AccessRecordSpec { subject: first.subject.clone(), events: events.clone() });
    let written = match api.create(&PostParams { field_manager: Some(super::apply::FIELD_MANAGER.into()), ..Default::default() }, &record).await {
        Ok(written) => written,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = serde_json::json!({"spec": {"events": events}});
            api.patch(&first.name, &PatchParams { field_manager: Some(super::apply::FIELD_MANAGER.into()), ..Default::default() }, &Patch::Merge(&patch))
                .await?
        }
        Err(e) => return Err(e),
    };
    own.record(written.metadata.resource_version.as_deref());
    Ok(())
}

/// Writes the plan's new facts, one request per record, several records at a time. `unreadable` names
/// registrations the types cannot read: they are not gone, so no `Deleted` fact is written for them.
pub async fn write_records(client: &Client, stores: &Stores, plan: &Plan, unreadable: &BTreeSet<String>, backoff: &mut Backoff, writes: &mut Writes) {
    let mut by_record: BTreeMap<&str, Vec<&RecordWrite>> = BTreeMap::new();
    for w in &plan.records {
        let gone_but_unreadable = w.event.type_ == crate::api::record::RecordEventType::Deleted
            && unreadable.contains(&format!("{}/{}", w.subject.namespace.as_deref().unwrap_or_default(), w.subject.name));
        if !gone_but_unreadable {
            by_record.entry(w.name.as_str()).or_default().push(w);
        }
    }
    let api: Api<AccessRecord> = Api::all(client.clone());
    let due: Vec<_> = by_record.into_iter().filter(|(name, _)| backoff.ready(&record_key(name))).collect();
    let (api, own) = (&api, &stores.own_writes);
    let mut results = futures::stream::iter(due.into_iter().map(|(name, ws)| async move {
        let events: BTreeMap<String, RecordEvent> = ws.iter().map(|w| (w.key.clone(), w.event.clone())).collect();
        (name, ws.len(), write_record(api, own, ws[0], events).await)
    }))
    .buffer_unordered(WRITE_CONCURRENCY);
    while let Some((name, n, result)) = results.next().await {
        let key = record_key(name);
        match result {
            Ok(()) => {
                backoff.succeeded(&key);
                writes.records += n;
            }
            Err(e) => {
                tracing::warn!(record = name, error = %e, "record write failed");
                backoff.failed(&key, &e);
                writes.failed += 1;
            }
        }
    }
}

fn record_key(name: &str) -> String {
    format!("AccessRecord/{name}")
}

/// The status an approval should have: condition `Accepted` with the rule engine's reason.
pub fn approval_status(approval: &AccessApproval, plan: &Plan, now: jiff::Timestamp) -> Option<AccessApprovalStatus> {
    let id = (approval.namespace().unwrap_or_default(), approval.name_any());
    let verdict = plan.approvals.get(&id)?;
    let previous = approval.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = approval.metadata.generation;
    Some(AccessApprovalStatus {
        observed_generation: generation,
        conditions: vec![condition("Accepted", verdict.accepted, verdict.reason.as_str(), &verdict.message, generation, previous, now)],
    })
}

/// Writes every approval status that differs, several at a time.
pub async fn write_approval_statuses(
    client: &Client,
    stores: &Stores,
    approvals: &[&AccessApproval],
    plan: &Plan,
    now: jiff::Timestamp,
    backoff: &mut Backoff,
    writes: &mut Writes,
) {
    let due: Vec<(String, &AccessApproval, AccessApprovalStatus)> = approvals
        .iter()
        .filter_map(|a| Some((*a, approval_status(a, plan, now)?)))
        .filter(|(a, status)| a.status.as_ref() != Some(status))
        .map(|(a, status)| (status_key(a), a, status))
        .filter(|(key, _, _)| backoff.ready(key))
        .collect();
    let own = &stores.own_writes;
    let mut results = futures::stream::iter(due.into_iter().map(|(key, a, status)| async move {
        let api: Api<AccessApproval> = Api::namespaced(client.clone(), &a.namespace().unwrap_or_default());
        (key, patch_status(api, own, a, &status).await)
    }))
    .buffer_unordered(WRITE_CONCURRENCY);
    while let Some((key, result)) = results.next().await {
        count_status(&key, result, backoff, writes);
    }
}

//! The audit history people read (`kubectl jpki history`), from the durable records (`AccessRecord`): one line per
//! recorded fact, oldest first, with when, what, who and about which object.

use crate::api::AccessRecord;
use crate::api::record::{RecordEvent, SubjectKind};
use crate::domain::rules::records::event_time;

/// The lines of the history of registration `name` in `namespace`, or with no namespace of every registration of
/// verifier `name` and of the environments they are in.
pub fn lines(records: &[AccessRecord], name: &str, namespace: Option<&str>) -> Vec<String> {
    let mut selected: Vec<&AccessRecord> = records
        .iter()
        .filter(|r| {
            let s = &r.spec.subject;
            match namespace {
                Some(ns) => s.kind == SubjectKind::AccessRegistration && s.namespace.as_deref() == Some(ns) && s.name == name,
                None => s.kind == SubjectKind::AccessRegistration && s.verifier.as_deref() == Some(name),
            }
        })
        .collect();
    if selected.is_empty() {
        return Vec::new();
    }
    // The holds of the environments these registrations are in.
    let environments: Vec<_> = selected.iter().filter_map(|r| r.spec.subject.environment).collect();
    selected.extend(
        records
            .iter()
            .filter(|r| r.spec.subject.kind == SubjectKind::AccessEnvironment && r.spec.subject.environment.is_some_and(|e| environments.contains(&e))),
    );
    let mut events: Vec<(jiff::Timestamp, &AccessRecord, &RecordEvent)> =
        selected.iter().flat_map(|r| r.spec.events.values().map(move |e| (event_time(e), *r, e))).collect();
    events.sort_by_key(|e| (e.0, e.2.type_));
    events
        .into_iter()
        .map(|(at, record, e)| {
            let s = &record.spec.subject;
            let subject = match &s.namespace {
                Some(ns) => format!("{ns}/{} (uid {})", s.name, short_uid(&s.uid)),
                None => format!("AccessEnvironment {}", s.name),
            };
            let mut line = format!("{}  {:<13} {subject}", at.strftime("%Y-%m-%dT%H:%M:%SZ"), e.type_.as_str());
            if let Some(actor) = &e.actor {
                line.push_str(&format!("  by {actor}"));
            }
            if let Some(approval) = &e.approval {
                line.push_str(&format!("  approval {approval}"));
            }
            if let Some(successor) = &e.successor {
                line.push_str(&format!("  successor {successor}"));
            }
            if let Some(message) = &e.message {
                line.push_str(&format!("  ({message})"));
            }
            line
        })
        .collect()
}

fn short_uid(uid: &str) -> &str {
    &uid[..uid.len().min(8)]
}

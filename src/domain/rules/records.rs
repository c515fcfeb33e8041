//! The durable facts of `AccessRecord`s, as the rules read them. The controller records a fact once it sees it;
//! from then on the fact holds whatever happens to other objects, across restarts and a loss of statuses:
//!
//! - a registration that stepped down for its successor (`Superseded`) or whose access ended (`Expired`) stays so;
//! - a decision made before a recorded rejection, or before (and including) a recorded decision that is gone
//!   (withdrawn: the approval was deleted), is void, so deleting the newest approval never brings an older one
//!   back into force.
//!
//! The last rule needs no `Withdrawn` event: a recorded decision missing from the cluster is enough, so there is no
//! pass in between in which an older approval is in force.

use crate::api::record::{RecordEvent, RecordEventType, SubjectKind};
use crate::api::{AccessApproval, AccessRecord};
use jiff::Timestamp;
use std::collections::HashMap;

/// Records by their subject's uid, and the supersessions by predecessor.
#[derive(Default)]
pub struct RecordIndex<'a> {
    by_uid: HashMap<&'a str, &'a AccessRecord>,
    /// (namespace, predecessor name) → successor name, from `Superseded` events.
    superseded: HashMap<(&'a str, &'a str), &'a str>,
}

/// A fact that ends a registration for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    Superseded { successor: String, at: Timestamp },
    Expired { at: Timestamp },
}

/// The time of an event (unparseable times count as the beginning: they void nothing and end nothing early).
pub fn event_time(event: &RecordEvent) -> Timestamp {
    event.at.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

impl<'a> RecordIndex<'a> {
    pub fn new(records: &[&'a AccessRecord]) -> Self {
        let mut index = RecordIndex::default();
        for &r in records {
            index.by_uid.insert(r.spec.subject.uid.as_str(), r);
            if r.spec.subject.kind != SubjectKind::AccessRegistration {
                continue;
            }
            for event in r.spec.events.values() {
                if let (RecordEventType::Superseded, Some(successor)) = (event.type_, event.successor.as_deref()) {
                    let namespace = r.spec.subject.namespace.as_deref().unwrap_or_default();
                    index.superseded.insert((namespace, r.spec.subject.name.as_str()), successor);
                }
            }
        }
        index
    }

    /// The record of the subject with this uid.
    pub fn of(&self, uid: &str) -> Option<&'a AccessRecord> {
        self.by_uid.get(uid).copied()
    }

    /// The successor a registration (by namespace and name) was recorded to have stepped down for.
    pub fn superseded_by(&self, namespace: &str, name: &str) -> Option<&'a str> {
        self.superseded.get(&(namespace, name)).copied()
    }

    /// The fact that ended the registration with this uid, if one was recorded.
    pub fn terminal(&self, uid: &str) -> Option<Terminal> {
        let record = self.of(uid)?;
        record.spec.events.values().find_map(|e| match (e.type_, &e.successor) {
            (RecordEventType::Superseded, Some(successor)) => Some(Terminal::Superseded { successor: successor.clone(), at: event_time(e) }),
            (RecordEventType::Expired, _) => Some(Terminal::Expired { at: event_time(e) }),
            _ => None,
        })
    }

    /// Which decisions on the registration with this uid are void: those stored before its newest recorded
    /// rejection, and those stored at or before a recorded decision that is no longer among `approvals` (withdrawn).
    pub fn void_line(&self, uid: &str, approvals: &[&AccessApproval]) -> VoidLine {
        let Some(record) = self.of(uid) else {
            return VoidLine::default();
        };
        let present = |approval_uid: &str| approvals.iter().any(|a| a.metadata.uid.as_deref() == Some(approval_uid));
        let mut line = VoidLine::default();
        for e in record.spec.events.values() {
            let withdrawn = e.approval_uid.as_deref().is_some_and(|u| !present(u));
            match e.type_ {
                RecordEventType::Rejected => line.before = line.before.max(Some(event_time(e))),
                RecordEventType::Approved if withdrawn => line.up_to = line.up_to.max(Some(event_time(e))),
                _ => {}
            }
            if e.type_ == RecordEventType::Rejected && withdrawn {
                line.up_to = line.up_to.max(Some(event_time(e)));
            }
        }
        line
    }
}

/// Where the recorded facts draw the line under a registration's decisions (server times of the decisions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoidLine {
    /// Decisions stored strictly before this are void (a recorded rejection ends what came before it).
    pub before: Option<Timestamp>,
    /// Decisions stored at or before this are void (a recorded decision was withdrawn).
    pub up_to: Option<Timestamp>,
}

impl VoidLine {
    pub fn voids(&self, decided_at: Timestamp) -> bool {
        self.before.is_some_and(|b| decided_at < b) || self.up_to.is_some_and(|u| decided_at <= u)
    }
}

//! A problem found in a form: the field it is about, the rule's typed reason and a message for a person.

use super::rules::Reason;
use serde::Serialize;

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object is refused: it contributes nothing (fail closed).
    Error,
    /// Worth a look, but the object is usable (e.g. a duplicate CIDR in one registration).
    Warning,
}

/// One finding about one field of one object.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The rule, typed: the same reason the controller puts in a condition.
    pub reason: Reason,
    /// JSON path of the field in the object, e.g. `spec.sourceCidrs[2]`; `metadata.namespace` for placement.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A field-level error of one object ([`Reason::ValidationFailed`]).
    pub fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { severity: Severity::Error, reason: Reason::ValidationFailed, field: field.into(), message: message.into() }
    }

    /// A field-level warning ([`Reason::Warning`]).
    pub fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { severity: Severity::Warning, reason: Reason::Warning, field: field.into(), message: message.into() }
    }

    /// A rule of the rule engine that refuses the object (or keeps it waiting), with its typed reason.
    pub fn refusal(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { severity: Severity::Error, reason, field: field.into(), message: message.into() }
    }

    /// A rule's finding that refuses nothing.
    pub fn notice(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { severity: Severity::Warning, reason, field: field.into(), message: message.into() }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// True when any of `problems` refuses the object.
pub fn has_errors(problems: &[Problem]) -> bool {
    problems.iter().any(Problem::is_error)
}

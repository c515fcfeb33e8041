//! The typed reasons of every verdict: why an object is refused, waits, or is in the state it is in. Conditions,
//! Events, `validate`'s findings, `kubectl jpki explain` and the metrics all use these, never free strings, so the
//! offline gate and the controller cannot drift apart in how they name a rule.

use serde::Serialize;

/// One reason. [`Reason::as_str`] is the CamelCase `reason` of a condition; [`Reason::category`] a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // The form itself (field-level checks of `crate::domain::forms`).
    /// A field is wrong (the message names it).
    ValidationFailed,
    /// A field is worth a look but refuses nothing.
    Warning,
    /// The chosen provision method does not fit the verifier's roles (signing `None` for a signature verifier).
    ProvisionMethodForRole,

    // References between objects.
    EnvironmentNotFound,
    /// A second AccessEnvironment for an environment that one already serves.
    EnvironmentServedTwice,
    VerifierNotFound,
    VerifierInvalid,
    /// The registration lives in another namespace than its verifier's.
    NamespaceMismatch,
    /// The verifier names a namespace another verifier claimed first.
    NamespaceClaimed,
    SupersedesNotFound,
    /// `supersedes` names a registration of another verifier or environment.
    SupersedesOtherLine,
    SupersedesCycle,
    /// An approval names a registration that does not exist.
    RegistrationNotFound,

    // The procedure's gates.
    AgreementMissing,
    StartBeforeAgreement,
    VerificationTestPending,
    /// Test access waits for the pledge (A-03-3) and the test-environment application (A-03-4).
    ProcedureIncomplete,
    /// The LGPKI route waits for the LGWAN全国センター step.
    LgwanCenterPending,

    // Decisions (approvals and rejections).
    AwaitingApproval,
    /// Approved once, but nothing the spec asks now is covered: the change waits for a new approval.
    AwaitingApprovalOfChange,
    Rejected,
    /// The decision names another object (a registration filed again under the same name has a new uid).
    RegistrationUidMismatch,
    /// `specDigest` is not the digest of the approved copy.
    DigestMismatch,
    /// The approved copy is for the other environment.
    EnvironmentMismatch,
    /// The decision was stored before the registration it names.
    DecidedBeforeFiling,
    /// A later rejection, or the withdrawal of a later decision, made this decision void.
    DecisionVoid,
    /// Accepted, and the decision in force.
    InForce,
    /// Accepted, but a newer decision is in force.
    Replaced,

    // Lifecycle.
    Scheduled,
    Active,
    Expired,
    Superseded,
    /// CIDRs of different verifiers overlap in overlapping access windows; the one approved first keeps them.
    Conflict,
    /// Not live, but still published while a mass removal is held.
    Held,
}

impl Reason {
    /// The CamelCase reason of a condition or Event.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            ValidationFailed => "ValidationFailed",
            Warning => "Warning",
            ProvisionMethodForRole => "ProvisionMethodForRole",
            EnvironmentNotFound => "EnvironmentNotFound",
            EnvironmentServedTwice => "EnvironmentServedTwice",
            VerifierNotFound => "VerifierNotFound",
            VerifierInvalid => "VerifierInvalid",
            NamespaceMismatch => "NamespaceMismatch",
            NamespaceClaimed => "NamespaceClaimed",
            SupersedesNotFound => "SupersedesNotFound",
            SupersedesOtherLine => "SupersedesOtherLine",
            SupersedesCycle => "SupersedesCycle",
            RegistrationNotFound => "RegistrationNotFound",
            AgreementMissing => "AgreementMissing",
            StartBeforeAgreement => "StartBeforeAgreement",
            VerificationTestPending => "VerificationTestPending",
            ProcedureIncomplete => "ProcedureIncomplete",
            LgwanCenterPending => "LgwanCenterPending",
            AwaitingApproval => "AwaitingApproval",
            AwaitingApprovalOfChange => "AwaitingApprovalOfChange",
            Rejected => "Rejected",
            RegistrationUidMismatch => "RegistrationUidMismatch",
            DigestMismatch => "DigestMismatch",
            EnvironmentMismatch => "EnvironmentMismatch",
            DecidedBeforeFiling => "DecidedBeforeFiling",
            DecisionVoid => "DecisionVoid",
            InForce => "InForce",
            Replaced => "Replaced",
            Scheduled => "Scheduled",
            Active => "Active",
            Expired => "Expired",
            Superseded => "Superseded",
            Conflict => "Conflict",
            Held => "Held",
        }
    }

    /// A bounded label for metrics and for grouping findings: `form`, `reference`, `procedure`, `decision`,
    /// `lifecycle` or `conflict`.
    pub fn category(self) -> &'static str {
        use Reason::*;
        match self {
            ValidationFailed | Warning | ProvisionMethodForRole => "form",
            EnvironmentNotFound
            | EnvironmentServedTwice
            | VerifierNotFound
            | VerifierInvalid
            | NamespaceMismatch
            | NamespaceClaimed
            | SupersedesNotFound
            | SupersedesOtherLine
            | SupersedesCycle
            | RegistrationNotFound => "reference",
            AgreementMissing | StartBeforeAgreement | VerificationTestPending | ProcedureIncomplete | LgwanCenterPending => "procedure",
            AwaitingApproval
            | AwaitingApprovalOfChange
            | Rejected
            | RegistrationUidMismatch
            | DigestMismatch
            | EnvironmentMismatch
            | DecidedBeforeFiling
            | DecisionVoid
            | InForce
            | Replaced => "decision",
            Scheduled | Active | Expired | Superseded | Held => "lifecycle",
            Conflict => "conflict",
        }
    }

    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 34] = {
        use Reason::*;
        [
            ValidationFailed,
            Warning,
            ProvisionMethodForRole,
            EnvironmentNotFound,
            EnvironmentServedTwice,
            VerifierNotFound,
            VerifierInvalid,
            NamespaceMismatch,
            NamespaceClaimed,
            SupersedesNotFound,
            SupersedesOtherLine,
            SupersedesCycle,
            RegistrationNotFound,
            AgreementMissing,
            StartBeforeAgreement,
            VerificationTestPending,
            ProcedureIncomplete,
            LgwanCenterPending,
            AwaitingApproval,
            AwaitingApprovalOfChange,
            Rejected,
            RegistrationUidMismatch,
            DigestMismatch,
            EnvironmentMismatch,
            DecidedBeforeFiling,
            DecisionVoid,
            InForce,
            Replaced,
            Scheduled,
            Active,
            Expired,
            Superseded,
            Conflict,
            Held,
        ]
    };
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_categories_bounded() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        let categories: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.category()).collect();
        assert_eq!(categories.into_iter().collect::<Vec<_>>(), ["conflict", "decision", "form", "lifecycle", "procedure", "reference"]);
    }
}

//! What the controller, the firewall agents and any other reader exchange through the API server, in one place:
//! the signed allowlist (`allowlist`: names, the signed message, verification), the keys (`signing`), and the
//! agents' reports and heartbeats (`report`).
//!
//! The controller writes and signs; an agent (or an appliance sync job) verifies with the public key from its own
//! configuration and re-checks every CIDR with the same domain rules as the forms (`crate::domain::cidr`). Neither
//! side imports the other: both depend on this module, which depends only on the API types and the domain.

pub mod allowlist;
pub mod report;
pub mod signing;

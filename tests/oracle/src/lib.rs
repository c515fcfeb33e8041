//! The fault tests' own oracle (issue #19). What must be admitted comes from each test's [`scenario::Scenario`],
//! written by the test from what it does; what is admitted comes from real TCP connects and from readers of this
//! crate's own: nftables through nft's JSON ([`nft`]), every NetworkPolicy of the service namespace ([`netpol`]),
//! and the signed allowlist read as a third party would ([`allowlist`]). This crate does not depend on jpki-access,
//! so it cannot reuse the planner, the agent's allowlist reader or its nft parser: a bug shared with them cannot
//! score zero here (tests/oracle_independence.rs keeps it so).
#![allow(clippy::unwrap_used, clippy::panic)]

pub mod allowlist;
pub mod checker;
pub mod netns;
pub mod netpol;
pub mod nft;
pub mod scenario;

pub use checker::{Checker, Report, Setup};
pub use scenario::{Expect, Scenario};

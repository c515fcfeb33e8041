//! jpki-access: a Kubernetes operator that turns J-LIS access-rights registration forms into network access.
//!
//! Layers, by dependency direction: `api` (CRD types, no I/O) ← `domain` (pure validation) ← `cli` (offline
//! commands reading files).

pub mod api;
pub mod domain;
pub mod cli;
pub mod manifest;
pub mod planner;
pub mod controller;
pub mod agent;
pub mod shutdown;

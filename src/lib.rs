//! jpki-access: a Kubernetes operator that turns J-LIS access-rights registration forms into network access.
//!
//! Layers, by dependency direction:
//! - `api`: the CRD types, no I/O (the only schema source of `crds/`);
//! - `domain`: pure rules of one form or a set of forms (identifiers, CIDRs, JST dates, validation);
//! - `planner`: a pure function from all forms and a clock to every object and status that must exist;
//! - `manifest`: reading forms from YAML files;
//! - `controller` and `agent`: the I/O edges (Kubernetes caches and writes; nftables);
//! - `cli`: the one binary's subcommands.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod domain;
pub mod fleet;
/// Public only for `fuzz/` and `tests/fuzz_corpus.rs`: the fuzz targets' bodies, over the public parsers.
pub mod fuzzing;
/// Public only for `fuzz/`: the `rules` fuzz target's body (see `fuzzing`).
pub mod fuzzing_rules;
pub mod manifest;
pub mod planner;
pub mod schema_check;
pub mod shutdown;
pub mod yaml_styles;

//! The last verified set, persisted on the node, so a node that boots while the API server is unreachable enforces
//! it at once instead of coming up open. What is stored is the set as published (the signed index and its shards):
//! it is verified again when read, exactly as from the API server, so a file changed on disk is refused like a
//! forged object.

use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A published set as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredSet {
    pub index: AccessAllowlist,
    pub shards: Vec<AccessAllowlistShard>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} is not a stored allowlist: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

impl StateError {
    pub fn category(&self) -> &'static str {
        match self {
            StateError::Read { .. } => "read",
            StateError::Parse { .. } => "parse",
            StateError::Write { .. } => "write",
        }
    }
}

/// The file of an environment's set in `dir`.
pub fn path(dir: &Path, environment: &str) -> PathBuf {
    dir.join(format!("allowlist-{environment}.json"))
}

/// The stored set, `Ok(None)` when there is none.
pub fn load(dir: &Path, environment: &str) -> Result<Option<StoredSet>, StateError> {
    let file = path(dir, environment);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read { path: file.display().to_string(), message: e.to_string() }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| StateError::Parse { path: file.display().to_string(), message: e.to_string() })
}

/// Deletes the stored set (after an uninstall: a later install must not boot from it); none is no error.
pub fn forget(dir: &Path, environment: &str) -> Result<(), StateError> {
    let file = path(dir, environment);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::Write { path: file.display().to_string(), message: e.to_string() }),
    }
}

/// Stores a set: written to a temporary file, synced, then renamed over the old one, so a crash leaves the old set
/// or the new one, never half of one.
pub fn save(dir: &Path, environment: &str, set: &StoredSet) -> Result<(), StateError> {
    use std::io::Write as _;
    let file = path(dir, environment);
    let err = |e: std::io::Error| StateError::Write { path: file.display().to_string(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".allowlist-{environment}.json.tmp"));
    let text = serde_json::to_vec(set).map_err(|e| StateError::Write { path: file.display().to_string(), message: e.to_string() })?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &file).map_err(err)?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

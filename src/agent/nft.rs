//! Running `nft` for the agent: in the host's network namespace or a test's (`ip netns exec`), every call bounded by
//! a timeout (a hung `nft` must not freeze the agent with its heartbeat: the child is killed and the call fails,
//! leaving the kernel's rules as they were, since nft applies a file all or nothing).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Why an nft call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {message} (is nftables installed?)")]
    Spawn { program: String, message: String },
    #[error("{program} did not finish within {seconds} s and was killed")]
    Timeout { program: String, seconds: u64 },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("talking to {program}: {message}")]
    Io { program: String, message: String },
}

impl NftError {
    pub fn category(&self) -> &'static str {
        match self {
            NftError::Spawn { .. } => "missing",
            NftError::Timeout { .. } => "timeout",
            NftError::Failed { .. } => "refused",
            NftError::Io { .. } => "io",
        }
    }
}

/// The nft program, where it runs, and how long a call may take.
#[derive(Debug, Clone)]
pub struct Nft {
    pub program: PathBuf,
    pub netns: Option<String>,
    pub timeout: Duration,
}

impl Nft {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => tokio::process::Command::new(&self.program),
        };
        cmd.args(args).kill_on_drop(true);
        cmd
    }

    fn name(&self) -> String {
        self.program.display().to_string()
    }

    /// Runs `nft args`, feeding `stdin` when given; returns stdout.
    async fn call(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let program = self.name();
        let work = async {
            let mut child = self
                .command(args)
                .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| NftError::Spawn { program: program.clone(), message: e.to_string() })?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).await.map_err(|e| NftError::Io { program: program.clone(), message: e.to_string() })?;
            }
            let out = child.wait_with_output().await.map_err(|e| NftError::Io { program: program.clone(), message: e.to_string() })?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join(" | ");
                Err(NftError::Failed { program: program.clone(), stderr: if stderr.is_empty() { format!("exit status {}", out.status) } else { stderr } })
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => Err(NftError::Timeout { program, seconds: self.timeout.as_secs() }),
        }
    }

    /// `nft -f -`: one transaction, all or nothing.
    pub async fn apply(&self, ruleset: &str) -> Result<(), NftError> {
        self.call(&["-f", "-"], Some(ruleset)).await.map(drop)
    }

    /// `nft -j list table`; `terse` leaves out set elements (no set dump).
    pub async fn list(&self, table: &str, terse: bool) -> Result<String, NftError> {
        let args: &[&str] = if terse { &["-t", "-j", "list", "table", "inet", table] } else { &["-j", "list", "table", "inet", table] };
        self.call(args, None).await
    }
}

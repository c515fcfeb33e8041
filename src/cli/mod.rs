//! The `jpki-access` command line: one binary, several subcommands.

pub mod approve;
pub mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "jpki-access",
    version,
    about = "Turns JPKI access-rights registration forms (A-08-1, A-11-1/2/3, A-13) into network access",
    after_help = "Examples:\n  jpki-access crd > crds/jpki-access.yaml\n  jpki-access validate examples/\n  jpki-access validate forms/ --output json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions (as committed in crds/).
    #[command(after_help = "Example:\n  jpki-access crd | kubectl apply --server-side -f -")]
    Crd,
    /// Validate files and folders of forms offline, including the rules that relate forms to each other.
    #[command(after_help = "Prints each problem as `file:document: kind/name: field: message`; exits 1 when any form \
is invalid.\n\nExamples:\n  jpki-access validate examples/\n  jpki-access validate verifiers/ registrations/sapporo.yaml\n  jpki-access validate forms/ --output json | jq '.problems[]'")]
    Validate {
        /// Files or folders (read recursively: *.yaml, *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Treat warnings as errors (exit 1 on any warning).
        #[arg(long)]
        strict: bool,
    },
    /// Print the AccessApproval (承認書) of a registration as it is now in a file: its digest and a copy of the
    /// approved content. Apply the output with kubectl.
    #[command(after_help = "Examples:\n  jpki-access approve examples/sapporo/registration-production.yaml --by approver@j-lis | kubectl apply -f -\n  jpki-access approve forms/ --registration sapporo-production-2026 --by approver@j-lis --reject --comment '役職印なし'")]
    Approve {
        /// A file or folder holding the registration.
        path: PathBuf,
        /// The registration's name, when the path holds more than one.
        #[arg(long)]
        registration: Option<String>,
        /// Who decides (the requesting user; the chart's admission policy refuses any other value).
        #[arg(long)]
        by: String,
        /// Record a rejection (却下) instead of an approval.
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
        /// Decision time, RFC 3339 (default: now).
        #[arg(long)]
        at: Option<jiff::Timestamp>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crd => match crate::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                0
            }
            Err(e) => {
                eprintln!("jpki-access crd: cannot serialise the CRDs: {e}");
                1
            }
        },
        Command::Validate { paths, output, strict } => validate::run(&paths, output, strict),
        Command::Approve { path, registration, by, reject, comment, at } => {
            approve::run(&path, registration.as_deref(), &by, reject, comment, at)
        }
    }
}

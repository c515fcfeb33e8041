//! The `jpki-access` command line: one binary, several subcommands.

pub mod approve;
pub mod fleet;
pub mod history;
pub mod plugin;
pub mod render;
pub mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "jpki-access",
    version,
    about = "Turns JPKI access-rights registration forms (A-08-1, A-11-1/2/3, A-13) into network access",
    after_help = "Examples:\n  jpki-access crd > crds/jpki-access.crds.yaml\n  jpki-access validate examples/\n  jpki-access validate forms/ --output json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: watch the forms, write NetworkPolicies, allowlists, routes, URL notices and status.
    #[command(
        after_help = "Uses the in-cluster configuration, or KUBECONFIG.\n\nExamples:\n  jpki-access controller\n  KUBECONFIG=target/controlplane/kubeconfig jpki-access controller --no-leader-election --listen 127.0.0.1:8080"
    )]
    Controller {
        /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else jpki-system).
        #[arg(long, env = "POD_NAMESPACE", default_value = "jpki-system")]
        lease_namespace: String,
        #[arg(long, default_value = "jpki-access-controller")]
        lease_name: String,
        /// This replica's identity in the Lease and in Events (default: $POD_NAME, else the host name and pid).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Run without leader election (a single replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Seconds added to the wall clock (tests move time with it).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true, hide = true)]
        clock_offset_seconds: i64,
        /// Full pass at least this often, to correct drift (seconds).
        #[arg(long, default_value_t = 300)]
        resync_seconds: u64,
        /// Passes start at least this far apart, so a burst of changes becomes one pass; a change after a quiet spell
        /// is planned at once (milliseconds).
        #[arg(long, default_value_t = 200)]
        debounce_ms: u64,
        /// The Ed25519 private key (PKCS#8 PEM) that signs the published allowlists; mounted from a Secret only the
        /// controller's pod reads (`jpki-access keygen` makes one).
        #[arg(long, env = "JPKI_SIGNING_KEY_FILE")]
        signing_key_file: PathBuf,
    },
    /// Run the firewall agent of one environment on this node: enforce its signed allowlist with nftables, report.
    #[command(after_help = "Runs as a DaemonSet on edge nodes (host network, NET_ADMIN only). Reads the signed AccessAllowlist of one \
environment and enforces it only when its signature holds with --public-key-file and every CIDR passes the forms' rules; at \
boot enforces the last verified set persisted in --state-dir, or drops the protected ports for every source until a \
verified set arrives. Renews a Lease per node as its heartbeat and report.\n\nExample:\n  jpki-access agent --environment production \
--namespace jpki-system --node $NODE_NAME --public-key-file /etc/jpki-access/allowlist.pub --protected-port TCP/443")]
    Agent {
        /// The AccessEnvironment (metadata.name) whose allowlist this node enforces.
        #[arg(long)]
        environment: String,
        /// Namespace of the allowlist (the environment's spec.firewall.allowlistNamespace); the heartbeat goes there.
        #[arg(long)]
        namespace: String,
        /// This node's name (default: $NODE_NAME).
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// The controller's Ed25519 public key (SubjectPublicKeyInfo PEM), from the agent's own configuration.
        #[arg(long)]
        public_key_file: PathBuf,
        /// Ports always filtered, before any set arrives and besides the set's (TCP/443, UDP/53); at least one.
        #[arg(long = "protected-port", required = true, value_parser = parse_port)]
        protected_ports: Vec<crate::api::environment::FirewallPort>,
        /// Destinations (CIDRs) whose forwarded traffic is always judged, besides the set's forwardDestinations.
        #[arg(long = "forward-destination", value_parser = parse_destination)]
        forward_destinations: Vec<ipnet::IpNet>,
        /// Where the last verified set is kept for the boot path (a hostPath on the node).
        #[arg(long, default_value = "/var/lib/jpki-access")]
        state_dir: PathBuf,
        /// Address of /healthz, /readyz and /metrics (none without).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Apply inside this network namespace (`ip netns exec`); for tests.
        #[arg(long, hide = true)]
        netns: Option<String>,
        #[arg(long, default_value = "/usr/sbin/nft")]
        nft: PathBuf,
        /// An nft call that takes longer is killed and counts as failed (seconds).
        #[arg(long, default_value_t = 30)]
        nft_timeout_seconds: u64,
        /// A change of more set elements than this replaces the whole table with `nft -f` instead of one netlink
        /// batch of the networks that differ (0: every change of elements replaces the table).
        #[arg(long, default_value_t = 100_000)]
        max_delta_elements: usize,
        /// Remove the table when stopping (by default the rules stay in force).
        #[arg(long)]
        remove_on_exit: bool,
        /// The agent's own DaemonSet (in --owner-namespace): when it has been deleted (`helm uninstall`), stopping
        /// removes the table and the persisted set; any other stop (restart, rolling update, lost API server)
        /// keeps the rules in force.
        #[arg(long)]
        owner_daemonset: Option<String>,
        /// Namespace of --owner-daemonset (default: $POD_NAMESPACE).
        #[arg(long, env = "POD_NAMESPACE")]
        owner_namespace: Option<String>,
        /// Check the kernel's table for drift this often (seconds).
        #[arg(long, default_value_t = 60)]
        resync_seconds: u64,
        /// Renew the heartbeat Lease this often (seconds).
        #[arg(long, default_value_t = 10)]
        heartbeat_seconds: u64,
        /// Test hook: while this file exists, the ruleset is broken on purpose.
        #[arg(long, hide = true)]
        break_file: Option<PathBuf>,
    },
    /// Make an Ed25519 key pair for signing the published allowlist: the private key (for the controller's Secret)
    /// and the public key (for the agents' configuration), as PEM files.
    #[command(
        after_help = "Example:\n  jpki-access keygen --out keys/\n  kubectl -n jpki-system create secret generic jpki-access-signing-key --from-file=ed25519.key=keys/allowlist.key\n  helm install jpki charts/jpki-access --set-file signing.publicKey=keys/allowlist.pub"
    )]
    Keygen {
        /// Folder for allowlist.key (mode 0600) and allowlist.pub; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the CustomResourceDefinitions (as committed in crds/).
    #[command(after_help = "Examples:\n  jpki-access crd | kubectl apply --server-side -f -\n  jpki-access crd --reference > docs/crd-reference.md")]
    Crd {
        /// Print the field reference (Markdown) instead of the CRDs.
        #[arg(long)]
        reference: bool,
    },
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
        /// Judge the procedure's dated gates at this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<jiff::Timestamp>,
    },
    /// Print what the forms in files would produce for one environment: NetworkPolicies, allowlist, routes,
    /// nftables ruleset, URL notices. Offline; the registrations' phases go to stderr.
    #[command(
        after_help = "Examples:\n  jpki-access render examples/ --env production\n  jpki-access render examples/ --env production --format allowlist\n  jpki-access render examples/ --env production --format nft > ruleset.nft && nft -c -f ruleset.nft\n  jpki-access render examples/ --env test --at 2026-03-01T00:00:00+09:00 --format notice"
    )]
    Render {
        /// Files or folders of forms.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The AccessEnvironment (metadata.name) to render.
        #[arg(long)]
        env: String,
        /// The instant to plan for (RFC 3339; default: now).
        #[arg(long)]
        at: Option<jiff::Timestamp>,
        #[arg(long, short, value_enum, default_value_t = RenderFormat::Yaml)]
        format: RenderFormat,
    },
    /// Print the AccessApproval (承認書) of a registration as it is now in a file: its digest and a copy of the
    /// approved content. Apply the output with kubectl.
    #[command(
        after_help = "Examples:\n  kubectl get areg -n verifier-sapporo sapporo-production-2026 -o yaml > reg.yaml\n  jpki-access approve reg.yaml --by approver@j-lis | kubectl create -f -\n  jpki-access approve stored/ --registration sapporo-production-2026 --by approver@j-lis --reject --comment '役職印なし'\n\nThe file must come from the API server (kubectl get -o yaml): a decision names the registration's uid. Against a\ncluster, kubectl jpki approve NAME -n NAMESPACE does all of this."
    )]
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
    /// Generate a synthetic national fleet of forms for scale tests: every local government of the reference list
    /// and companies, each with a verifier, test and production registrations and their approvals.
    #[command(
        after_help = "Examples:\n  jpki-access fleet --scale 1 --out /tmp/fleet          # the real population, as YAML folders\n  jpki-access fleet --scale 3 --out /tmp/fleet3 && jpki-access validate /tmp/fleet3\n  KUBECONFIG=target/controlplane/kubeconfig jpki-access fleet --scale 1 --apply"
    )]
    Fleet {
        /// Multiple of the real population (1 = 1,788 local governments and --companies companies).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Companies at scale 1.
        #[arg(long, default_value_t = crate::fleet::COMPANIES_2026)]
        companies: usize,
        /// Write the forms as YAML, one file per verifier, under this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Create the fleet in the cluster of KUBECONFIG (server-side apply; namespaces included).
        #[arg(long)]
        apply: bool,
        /// Requests in flight with --apply.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Decision time of the approvals, RFC 3339.
        #[arg(long, default_value = "2026-03-15T00:00:00Z")]
        approved_at: jiff::Timestamp,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderFormat {
    /// Every object that would be applied, as multi-document YAML.
    Yaml,
    /// The aggregated live CIDRs, one per line, IPv4 before IPv6, each in address order.
    Allowlist,
    /// The nftables ruleset of the firewall agents (for `nft -f`).
    Nft,
    /// The URL notices (URL通知書) of the live registrations.
    Notice,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Controller {
            lease_namespace,
            lease_name,
            identity,
            no_leader_election,
            listen,
            clock_offset_seconds,
            resync_seconds,
            debounce_ms,
            signing_key_file,
        } => {
            let signing_key = match crate::wire::signing::SigningKey::from_file(&signing_key_file) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("jpki-access controller: the allowlist signing key: {e}");
                    return 1;
                }
            };
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "controller".into());
                format!("{host}-{}", std::process::id())
            });
            let settings = crate::controller::Settings {
                lease_namespace,
                lease_name,
                identity,
                leader_election: !no_leader_election,
                listen,
                clock_offset: jiff::SignedDuration::from_secs(clock_offset_seconds),
                resync: std::time::Duration::from_secs(resync_seconds.max(1)),
                debounce: std::time::Duration::from_millis(debounce_ms),
                signing_key: std::sync::Arc::new(signing_key),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("jpki-access controller: cannot start the runtime: {e}");
                    return 1;
                }
            };
            match runtime.block_on(crate::controller::run(settings)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("jpki-access controller: {e}");
                    1
                }
            }
        }
        Command::Agent {
            environment,
            namespace,
            node,
            public_key_file,
            protected_ports,
            forward_destinations,
            state_dir,
            listen,
            netns,
            nft,
            nft_timeout_seconds,
            max_delta_elements,
            remove_on_exit,
            owner_daemonset,
            owner_namespace,
            resync_seconds,
            heartbeat_seconds,
            break_file,
        } => {
            let public_key = match crate::wire::signing::PublicKey::from_file(&public_key_file) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("jpki-access agent: the controller's public key: {e}");
                    return 1;
                }
            };
            let settings = crate::agent::Settings {
                environment,
                namespace,
                node,
                netns,
                nft,
                nft_timeout: std::time::Duration::from_secs(nft_timeout_seconds.max(1)),
                max_delta_elements,
                remove_on_exit,
                owner_daemonset: match (owner_daemonset, owner_namespace) {
                    (Some(name), Some(namespace)) => Some((namespace, name)),
                    (Some(name), None) => {
                        eprintln!("jpki-access agent: --owner-daemonset {name} needs --owner-namespace (or $POD_NAMESPACE)");
                        return 2;
                    }
                    (None, _) => None,
                },
                resync: std::time::Duration::from_secs(resync_seconds.max(1)),
                heartbeat: std::time::Duration::from_secs(heartbeat_seconds.max(1)),
                break_file,
                public_key,
                state_dir,
                protected_ports,
                forward_destinations,
                listen,
            };
            match tokio::runtime::Runtime::new().map_err(|e| e.to_string()).and_then(|rt| rt.block_on(crate::agent::run(settings)).map_err(|e| e.to_string())) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("jpki-access agent: {e}");
                    1
                }
            }
        }
        Command::Keygen { out } => keygen(&out),
        Command::Crd { reference: true } => {
            print!("{}", crate::api::reference::markdown());
            0
        }
        Command::Crd { reference: false } => match crate::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                0
            }
            Err(e) => {
                eprintln!("jpki-access crd: cannot serialise the CRDs: {e}");
                1
            }
        },
        Command::Validate { paths, output, strict, at } => validate::run(&paths, output, strict, at),
        Command::Render { paths, env, at, format } => render::run(&paths, &env, at.unwrap_or_else(jiff::Timestamp::now), format),
        Command::Approve { path, registration, by, reject, comment, at } => approve::run(&path, registration.as_deref(), &by, reject, comment, at),
        Command::Fleet { scale, companies, out, apply, concurrency, approved_at } => {
            if out.is_none() && !apply {
                eprintln!("error: say where the fleet goes: --out FOLDER, --apply, or both");
                return 2;
            }
            fleet::run(crate::fleet::FleetSettings { scale, companies, approved_at }, out.as_deref(), apply, concurrency)
        }
    }
}

/// `TCP/443` or `UDP/53`.
fn parse_port(text: &str) -> Result<crate::api::environment::FirewallPort, String> {
    use crate::api::environment::{FirewallPort, Protocol};
    let (protocol, port) = text.split_once('/').ok_or_else(|| format!("{text:?}: write a port as TCP/443 or UDP/53"))?;
    let protocol = match protocol {
        "TCP" | "tcp" => Protocol::Tcp,
        "UDP" | "udp" => Protocol::Udp,
        other => return Err(format!("{text:?}: protocol {other:?} is neither TCP nor UDP")),
    };
    match port.parse::<i32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(FirewallPort { protocol, port }),
        _ => Err(format!("{text:?}: the port must be a number from 1 to 65535")),
    }
}

/// A destination CIDR in canonical form, never /0.
fn parse_destination(text: &str) -> Result<ipnet::IpNet, String> {
    match text.parse::<ipnet::IpNet>() {
        Ok(net) if net.prefix_len() > 0 && net.trunc() == net => Ok(net),
        Ok(net) if net.prefix_len() == 0 => Err(format!("{text:?}: /0 would judge every forwarded packet; name the services' addresses")),
        Ok(net) => Err(format!("{text:?}: host bits are set; write {}", net.trunc())),
        Err(e) => Err(format!("{text:?}: not a CIDR ({e})")),
    }
}

fn keygen(out: &std::path::Path) -> i32 {
    let (private, public) = match crate::wire::signing::generate() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("jpki-access keygen: {e}");
            return 1;
        }
    };
    let (key_path, pub_path) = (out.join("allowlist.key"), out.join("allowlist.pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            eprintln!("jpki-access keygen: {} exists; not overwriting a key", p.display());
            return 1;
        }
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(out)?;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path)?;
        f.write_all(private.as_bytes())?;
        std::fs::write(&pub_path, &public)
    };
    match write() {
        Ok(()) => {
            println!("{}\n{}", key_path.display(), pub_path.display());
            0
        }
        Err(e) => {
            eprintln!("jpki-access keygen: writing into {}: {e}", out.display());
            1
        }
    }
}

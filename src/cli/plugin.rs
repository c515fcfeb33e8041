//! `kubectl jpki ...`: the operator's everyday verbs against a cluster. The same binary installed (or linked) as
//! `kubectl-jpki` on PATH; kubectl passes the words after `jpki`.

use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, Decision};
use crate::domain::approve::approval_for;
use clap::{Parser, Subcommand};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl jpki",
    about = "JPKI access registrations: approve, reject, status, notice",
    after_help = "Examples:\n  kubectl jpki status\n  kubectl jpki approve sapporo-production-2026 -n verifier-sapporo --comment 書類確認済み\n  kubectl jpki reject sapporo-production-2026 -n verifier-sapporo --comment '役職印なし'\n  kubectl jpki notice sapporo-production-2026 -n verifier-sapporo\n  kubectl jpki history sapporo-production-2026 -n verifier-sapporo\n  kubectl jpki history sapporo-city"
)]
pub struct Plugin {
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Record the approval (承認書) of a registration as it is now, decided by you.
    Approve(Decide),
    /// Record a rejection (却下) of a registration as it is now.
    Reject(Decide),
    /// A table per environment: verifier, registration, phase, CIDRs, start, setup due date, agents in sync.
    Status,
    /// Why a registration is or is not active, rule by rule (the planner's verdict on the cluster's objects now).
    Explain {
        registration: String,
        #[arg(short, long)]
        namespace: String,
    },
    /// The recorded history of a registration or a verifier: filed, approved, rejected, withdrawn, superseded,
    /// expired, deleted, and the holds of its environment, with who and when (from the durable AccessRecords, which
    /// outlive Events, the registration itself and its namespace).
    History {
        /// A registration (with -n), or a verifier (without -n): its registrations' histories together.
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print the URL notice (URL通知書) of a registration.
    Notice {
        registration: String,
        #[arg(short, long)]
        namespace: String,
        /// English instead of Japanese.
        #[arg(long)]
        english: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct Decide {
    registration: String,
    #[arg(short, long)]
    namespace: String,
    #[arg(long)]
    comment: Option<String>,
}

/// Runs `kubectl jpki` with the words after `jpki`.
pub fn main(args: Vec<String>) -> i32 {
    let plugin = Plugin::parse_from(std::iter::once("kubectl-jpki".to_string()).chain(args));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubectl jpki: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(plugin.command)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kubectl jpki: {e}");
            1
        }
    }
}

async fn run(verb: Verb) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| format!("cannot reach the cluster ({e}); check KUBECONFIG or --kubeconfig"))?;
    match verb {
        Verb::Approve(d) => decide(&client, d, Decision::Approved).await,
        Verb::Reject(d) => decide(&client, d, Decision::Rejected).await,
        Verb::Status => status(&client).await,
        Verb::Notice { registration, namespace, english } => notice(&client, &registration, &namespace, english).await,
        Verb::Explain { registration, namespace } => explain(&client, &registration, &namespace).await,
        Verb::History { name, namespace } => history(&client, &name, namespace.as_deref()).await,
    }
}

/// Who the cluster says we are (SelfSubjectReview): the approval records exactly that user.
async fn whoami(client: &Client) -> Result<String, String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api.create(&PostParams::default(), &SelfSubjectReview::default()).await.map_err(|e| format!("cannot tell who you are: {e}"))?;
    review.status.and_then(|s| s.user_info).and_then(|u| u.username).ok_or_else(|| "the cluster did not say who you are".to_string())
}

async fn decide(client: &Client, d: Decide, decision: Decision) -> Result<(), String> {
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), &d.namespace);
    let reg = regs.get_opt(&d.registration).await.map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("no AccessRegistration {:?} in namespace {:?}; list them with `kubectl get accessregistrations -A`", d.registration, d.namespace)
    })?;
    let user = whoami(client).await?;
    let approval = approval_for(&reg, decision, &user, jiff::Timestamp::now(), d.comment).map_err(|e| e.to_string())?;
    let api: Api<AccessApproval> = Api::namespaced(client.clone(), &d.namespace);
    match api.create(&PostParams::default(), &approval).await {
        Ok(created) => {
            println!("accessapproval/{} created: {:?} by {user} (spec {})", created.name_any(), decision, approval.spec.spec_digest);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Err(format!("{} already holds a decision on this exact content; edit the registration to decide on new content", approval.name_any()))
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Err(format!("not allowed to create AccessApprovals in {:?} ({}); ask for the jpki-access-approver role", d.namespace, s.message))
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn status(client: &Client) -> Result<(), String> {
    let envs = Api::<AccessEnvironment>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    let regs = Api::<AccessRegistration>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    let mut envs: Vec<_> = envs.items;
    envs.sort_by_key(|e| e.name_any());
    for env in envs {
        let st = env.status.clone().unwrap_or_default();
        println!(
            "{} ({}): {} live, {} CIDRs, agents in sync {}",
            env.name_any(),
            env.spec.environment,
            st.live_registrations.unwrap_or(0),
            st.cidr_count.unwrap_or(0),
            st.agents_in_sync.as_deref().unwrap_or("-")
        );
        println!("  {:<28} {:<40} {:<16} {:>5}  {:<10}  {:<10}", "VERIFIER", "REGISTRATION", "PHASE", "CIDRS", "START", "DUE");
        let mut rows: Vec<_> = regs.items.iter().filter(|r| r.spec.environment == env.spec.environment).collect();
        rows.sort_by_key(|r| (r.spec.verifier_ref.clone(), r.name_any()));
        for r in rows {
            let s = r.status.clone().unwrap_or_default();
            let due = match (s.setup_due_date, s.setup_overdue) {
                (Some(d), Some(true)) => format!("{d} OVERDUE"),
                (Some(d), _) => d.to_string(),
                (None, _) => "-".into(),
            };
            println!(
                "  {:<28} {:<40} {:<16} {:>5}  {:<10}  {due}",
                r.spec.verifier_ref,
                format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
                s.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into()),
                s.effective_cidr_count.unwrap_or(0),
                r.spec.access_start_date
            );
        }
    }
    Ok(())
}

async fn notice(client: &Client, registration: &str, namespace: &str, english: bool) -> Result<(), String> {
    let name = crate::planner::notice::notice_name(registration);
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&name).await.map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("no URL notice for {registration} yet: it is issued once the registration is approved (Scheduled or Active); see `kubectl get accessregistration {registration} -n {namespace}`")
    })?;
    let key = if english { "notice.en.txt" } else { "notice.ja.txt" };
    print!("{}", cm.data.unwrap_or_default().get(key).cloned().unwrap_or_default());
    Ok(())
}

async fn explain(client: &Client, registration: &str, namespace: &str) -> Result<(), String> {
    use crate::api::SignatureVerifier;
    use crate::api::registration::RegistrationPhase;
    use crate::planner::liveness::{RegKey, Standing};
    let lp = ListParams::default();
    let err = |e: kube::Error| e.to_string();
    let verifiers = Api::<SignatureVerifier>::all(client.clone()).list(&lp).await.map_err(err)?.items;
    let registrations = Api::<AccessRegistration>::all(client.clone()).list(&lp).await.map_err(err)?.items;
    let approvals = Api::<AccessApproval>::all(client.clone()).list(&lp).await.map_err(err)?.items;
    let environments = Api::<AccessEnvironment>::all(client.clone()).list(&lp).await.map_err(err)?.items;
    let records = Api::<AccessRecord>::all(client.clone()).list(&lp).await.map_err(err)?.items;
    let now = jiff::Timestamp::now();
    let objects = crate::planner::Objects::of(&verifiers, &registrations, &approvals, &environments).with_records(&records);
    let plan = crate::planner::plan(&objects.input(), now);
    let key = RegKey { namespace: namespace.to_string(), name: registration.to_string() };
    let rp = plan
        .registrations
        .get(&key)
        .ok_or_else(|| format!("no AccessRegistration {registration:?} in namespace {namespace:?}; list them with `kubectl get accessregistrations -A`"))?;
    let r = &rp.resolved;
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    println!(
        "{namespace}/{registration} at {now}: {:?} ({}){}",
        r.phase,
        r.reason,
        if r.message.is_empty() { String::new() } else { format!(": {}", r.message) }
    );
    let errors: Vec<_> = r.evaluation.problems.iter().filter(|p| p.is_error()).collect();
    println!("{} 1. the form is valid{}", mark(errors.is_empty()), errors.iter().map(|p| format!("\n     {}: {}", p.field, p.message)).collect::<String>());
    let refused = |category: &str| matches!(&r.evaluation.standing, Standing::Invalid(x) if x.reason.category() == category);
    let reference = refused("reference") || refused("form");
    println!(
        "{} 2. its verifier {} exists, is valid, owns this namespace, and an AccessEnvironment serves {}",
        mark(!reference),
        r.evaluation.verifier,
        r.evaluation.environment
    );
    for v in &r.evaluation.approvals {
        println!("  {} AccessApproval {}: {} ({}) {}", mark(v.accepted), v.name, v.reason, v.reason.category(), v.message);
    }
    match &r.decided {
        Some(d) if r.phase == RegistrationPhase::Rejected => {
            println!("✗ 3. approved: rejected by {} ({}), stored at {}", d.approval, d.decided_by, d.decided_at)
        }
        Some(d) => println!("✓ 3. approved by {} ({}), stored at {}", d.approval, d.decided_by, d.decided_at),
        None => println!("✗ 3. approved: no decision binds to this registration (kubectl jpki approve {registration} -n {namespace})"),
    }
    let gate = refused("procedure");
    match &rp.status.pending_difference {
        Some(p) => println!("! 4. the spec asks for more than was approved (waits for a new approval): {p:?}"),
        None => println!("✓ 4. the spec asks for nothing beyond the approval"),
    }
    let why = match &r.evaluation.standing {
        Standing::Invalid(x) if gate => format!(": {} ({})", x.message, x.reason),
        _ => String::new(),
    };
    println!("{} 5. procedure gates (agreement date, verification test, pledge, LGWAN centre){why}", mark(!gate));
    if let Some(w) = &r.window {
        let within = now >= w.start && w.end.is_none_or(|e| now < e);
        println!("{} 6. now is inside the access window: from {} {}", mark(within), w.start, w.end.map(|e| format!("until {e}")).unwrap_or_default());
    }
    println!("{} 7. not superseded or ended (recorded facts are final)", mark(!matches!(r.phase, RegistrationPhase::Superseded | RegistrationPhase::Expired)));
    println!(
        "{} 8. no conflict with another verifier{}",
        mark(r.conflicts.is_empty()),
        r.conflicts
            .iter()
            .map(|c| format!("\n     {}/{} (verifier {}) holds {:?} from {}", c.namespace, c.name, c.verifier, c.cidrs, c.from.as_deref().unwrap_or("-")))
            .collect::<String>()
    );
    if let Some(next) = rp.next_transition {
        println!("next change by itself: {next}");
    }
    Ok(())
}

/// `kubectl jpki history`: the recorded facts of one registration (every record of that name in the namespace, so
/// also of earlier objects filed under it), or of every registration of a verifier, oldest first.
async fn history(client: &Client, name: &str, namespace: Option<&str>) -> Result<(), String> {
    let records = Api::<AccessRecord>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
    let lines = crate::cli::history::lines(&records, name, namespace);
    if lines.is_empty() {
        return Err(match namespace {
            Some(ns) => format!("no recorded history of AccessRegistration {name:?} in namespace {ns:?}: facts are recorded once it is decided on"),
            None => format!("no recorded history of a verifier named {name:?}; for a registration, add -n NAMESPACE"),
        });
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

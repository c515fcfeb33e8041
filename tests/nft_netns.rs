//! The rendered nftables ruleset against the real kernel: real packets between network namespaces.
//!
//! Topology, built per test (names carry the pid and a tag, removed in `Drop` even when a test panics):
//!
//! ```text
//!   client C                         router R (agent)                    server S
//!   198.51.100.10 (allowed) ─┐      198.51.100.1 │ 203.0.113.1      203.0.113.2
//!   198.51.100.20 (refused) ─┴ veth ─ 2001:db8:1::1 │ 2001:db8:2::1 ─ veth ─ 2001:db8:2::2
//!   2001:db8:1::10 / ::20            forwarding on, ruleset here        listeners :443, :8443
//! ```
//!
//! The ruleset goes into R with `ip netns exec R nft -f`; its forward chain judges C → S (S's addresses are the
//! declared destinations), its input chain C → R.
//!
//! Sockets: the test enters a namespace from a fresh thread with `setns(2)` (network namespaces are per thread) and
//! creates its sockets there, so listeners and clients are plain in-process sockets: no helper processes or extra
//! tools (python3 is not installed by `scripts/test`), and a listener ends when the test drops it. std cannot bind
//! a client socket to a chosen source address before `connect`, so a few lines of FFI to libc (which std links
//! anyway) do `socket`/`bind`/`connect` with `SO_SNDTIMEO` as the connect timeout. Listeners accept and close each
//! connection at once (tests/support/netns.rs), so a test that polls never fills a backlog.
//!
//! "Refused" means the SYN is dropped: the connect times out. A reset or an error is a failure of the test, as is
//! any connect failing before the ruleset is applied (a broken topology must not pass as a working firewall).
#![cfg(feature = "cluster-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::planner::nft::{render_removal, render_ruleset, table_name};
#[allow(unused_imports)]
use support::netns::ruleset_to_server;
use support::netns::*;

#[test]
fn allowlist_filters_forwarded_and_local_tcp_443_only() {
    let topo = Topology::new("a").with_listeners();
    topo.settle();

    let (v4, v6) = allow(C4_OK, C6_OK);
    let ruleset = ruleset_to_server(&v4, &v6, &[tcp(443)]);
    topo.apply(&ruleset); // the first apply: the table does not exist yet, the delete must not fail
    let table = topo.list(&["table", "inet", &table_name(ENV)]);
    assert!(table.contains(C4_OK) && table.contains(C6_OK) && !table.contains(C4_NO), "{table}");
    assert!(table.contains("hook forward") && table.contains("hook input"), "{table}");

    topo.check("allowlist .10 / ::10 on tcp 443", &expect_only(&[C4_OK, C6_OK]));
}

#[test]
fn replacing_the_ruleset_is_atomic_and_flips_access() {
    let topo = Topology::new("b").with_listeners();
    topo.settle();
    let t = table_name(ENV);

    let (v4, v6) = allow(C4_OK, C6_OK);
    topo.apply(&ruleset_to_server(&v4, &v6, &[tcp(443)]));
    topo.check("allowlist .10 / ::10", &expect_only(&[C4_OK, C6_OK]));

    let (v4, v6) = allow(C4_NO, C6_NO);
    let swapped = ruleset_to_server(&v4, &v6, &[tcp(443)]);
    topo.apply(&swapped);
    topo.apply(&swapped); // applying the same text again is harmless
    assert_eq!(topo.list(&["tables"]), format!("table inet {t}\n"), "exactly one table after replacing");
    let set = topo.list(&["set", "inet", &t, "allow_v4"]);
    assert!(set.contains(C4_NO) && !set.contains(C4_OK), "the replaced set still holds old elements:\n{set}");
    topo.check("swapped to .20 / ::20", &expect_only(&[C4_NO, C6_NO]));

    // A file nft refuses (port out of range) changes nothing: the transaction is all or nothing.
    let before = topo.list(&["table", "inet", &t]);
    let bad = render_ruleset(ENV, &[], &[], &[tcp(443), tcp(70000)]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bad).unwrap();
    let out = topo.nft(&["-f", file.path().to_str().unwrap()]);
    assert!(!out.status.success(), "nft accepted port 70000:\n{bad}");
    assert_eq!(topo.list(&["table", "inet", &t]), before, "a refused file changed the live table");

    topo.apply(&ruleset_to_server(&[], &[], &[tcp(443)]));
    topo.check("empty allowlist", &expect_only(&[]));

    topo.apply(&ruleset_to_server(&[], &[], &[]));
    topo.check("no ports: nothing filtered", &baseline());

    let removal = render_removal(ENV);
    topo.apply(&removal);
    topo.apply(&removal); // removing a table that is not there succeeds too
    assert_eq!(topo.list(&["tables"]), "", "the table is still there after removal");
}

/// `jpki-access render --format nft`, the command a person runs, from forms on disk: its output loaded into the
/// router passes the approved source and drops the other, in both families.
#[test]
fn the_rendered_ruleset_of_forms_filters_real_packets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for file in ["00-namespaces.yaml", "environments.yaml", "sapporo-city/verifier.yaml"] {
        let target = dir.path().join(file.replace('/', "-"));
        std::fs::copy(root.join("examples").join(file), target).unwrap();
    }
    let registration = format!(
        "apiVersion: access.jpki.dev/v1alpha1\nkind: AccessRegistration\nmetadata: {{name: netns-probe, namespace: verifier-sapporo, uid: 6e7e7e7e-0000-4000-8000-000000000001, creationTimestamp: \"2026-01-05T00:00:00Z\"}}\n\
         spec:\n  verifierRef: sapporo-city\n  environment: Production\n  connectionMethod: Internet\n  sourceCidrs: [\"{C4_OK}/32\", \"{C6_OK}/128\"]\n  \
         accessStartDate: \"2026-04-01\"\n  provisionMethods: {{signing: Ocsp, userAuthentication: Crl}}\n  officialSealAffixed: true\n"
    );
    let reg_path = dir.path().join("registration.yaml");
    std::fs::write(&reg_path, registration).unwrap();
    let cli = env!("CARGO_BIN_EXE_jpki-access");
    let approval = std::process::Command::new(cli)
        .args(["approve", reg_path.to_str().unwrap(), "--by", "approver@j-lis", "--at", "2026-03-05T01:00:00Z"])
        .output()
        .unwrap();
    assert!(approval.status.success(), "{}", String::from_utf8_lossy(&approval.stderr));
    std::fs::write(dir.path().join("approval.yaml"), approval.stdout).unwrap();
    let rendered = std::process::Command::new(cli)
        .args(["render", dir.path().to_str().unwrap(), "--env", "production", "--format", "nft", "--at", "2026-05-01T00:00:00+09:00"])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let ruleset = String::from_utf8(rendered.stdout).unwrap();
    assert!(ruleset.contains(C4_OK) && ruleset.contains("table inet jpki_access_production {"), "{ruleset}");

    let topo = Topology::new("c").with_listeners();
    topo.settle();
    topo.apply(&ruleset);
    topo.check("rendered from forms: .10 / ::10 approved", &expect_only(&[C4_OK, C6_OK]));
}

/// The forward chain judges only the declared destinations: a second address of the server, not declared, is
/// reached on 443 by every source, and without any destination nothing forwarded is judged (the node's own input
/// chain still is). Before issue 18 the forward chain dropped every forwarded TCP/443 from sources not on the
/// allowlist, whatever its destination (a pod's own outgoing HTTPS included).
#[test]
fn the_forward_chain_judges_only_the_declared_destinations() {
    let mut topo = Topology::new("d").with_listeners();
    const OTHER4: &str = "203.0.113.3";
    const OTHER6: &str = "2001:db8:2::3";
    run(&["ip", "-n", &topo.server, "addr", "add", &format!("{OTHER4}/24"), "dev", "sr"]);
    run(&["ip", "-n", &topo.server, "addr", "add", &format!("{OTHER6}/64"), "dev", "sr", "nodad"]);
    let server = topo.server.clone();
    topo.listen(&server, OTHER4, 443);
    topo.listen(&server, OTHER6, 443);
    topo.settle();
    let others = |expect: bool| {
        [C4_OK, C4_NO].iter().map(|s| probe(s, OTHER4, 443, expect)).chain([C6_OK, C6_NO].iter().map(|s| probe(s, OTHER6, 443, expect))).collect::<Vec<_>>()
    };

    let (v4, v6) = allow(C4_OK, C6_OK);
    topo.apply(&ruleset_to_server(&v4, &v6, &[tcp(443)]));
    topo.check("declared destination judged", &expect_only(&[C4_OK, C6_OK]));
    topo.check("another destination behind the node is not touched", &others(true));

    topo.apply(&render_ruleset(ENV, &v4, &v6, &[tcp(443)]));
    let table = topo.list(&["table", "inet", &table_name(ENV)]);
    assert!(!table.contains("hook forward"), "no destinations, no forward chain:\n{table}");
    let mut probes = others(true);
    for (src, dst, router) in [(C4_OK, S4, R4), (C4_NO, S4, R4), (C6_OK, S6, R6), (C6_NO, S6, R6)] {
        let ok = [C4_OK, C6_OK].contains(&src);
        probes.extend([probe(src, dst, 443, true), probe(src, router, 443, ok)]);
    }
    topo.check("without destinations only the node's own port is judged", &probes);
}

//! The container images (scripts/image, images/).
//!
//! Always: images/crates.txt lists exactly the crates Cargo.lock compiles into the binary, with their licences, so
//! a crate added to the binary fails this test until the summary (what every image's SBOM must list) is updated
//! and reviewed.
//!
//! With the feature `image-tests` (scripts/test enables it): `scripts/image check` builds both images twice and
//! they are byte-identical; each SBOM, read from the image layout, lists exactly the crates of images/crates.txt
//! and the Debian packages found in the image; the controller image holds no shell and is under 40 MB; both run
//! under podman: `--version` and `--help`; the controller as UID 65532, ready against the test control plane; the
//! agent's own `nft` applying the ruleset its own binary renders from examples/.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, panics with its output unless it succeeds, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `crate NAME VERSION LICENCE` lines of images/crates.txt.
fn committed_crates() -> BTreeSet<String> {
    std::fs::read_to_string(root().join("images/crates.txt")).unwrap().lines().filter(|l| l.starts_with("crate ")).map(str::to_string).collect()
}

fn difference(name_a: &str, a: &BTreeSet<String>, name_b: &str, b: &BTreeSet<String>) -> String {
    let only = |x: &BTreeSet<String>, y: &BTreeSet<String>| x.difference(y).cloned().collect::<Vec<_>>().join("\n  ");
    format!("only in {name_a}:\n  {}\nonly in {name_b}:\n  {}", only(a, b), only(b, a))
}

#[test]
fn the_crates_summary_lists_exactly_the_crates_cargo_lock_puts_in_the_binary() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = run(Command::new("rustc").arg("-vV"));
    let host = rustc.lines().find_map(|l| l.strip_prefix("host: ")).unwrap();
    // Normal dependencies on this target with default features; build scripts' and proc-macros' dependencies run
    // at build time only and are not in the binary.
    let tree = run(Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal,no-proc-macro", "--target", host, "--prefix", "none", "--format", "{p}|{l}"])
        .current_dir(root()));
    let from_lockfile: BTreeSet<String> = tree
        .lines()
        .map(|line| {
            let (package, licence) = line.split_once('|').unwrap();
            let mut words = package.split_whitespace();
            let (name, version) = (words.next().unwrap(), words.next().unwrap().trim_start_matches('v'));
            // The deprecated licence separator '/' reads ' OR ' (as cargo-cyclonedx writes it in the SBOM).
            let licence = licence.trim_end_matches(" (*)").trim().replace('/', " OR ");
            format!("crate {name} {version} {licence}").trim_end().to_string()
        })
        .collect();
    assert!(from_lockfile.iter().any(|c| c.starts_with("crate kube-client ")), "{tree}");
    let committed = committed_crates();
    assert!(
        from_lockfile == committed,
        "images/crates.txt is not the binary's crates: run scripts/image crates, review the change (licences) and commit it\n{}",
        difference("Cargo.lock", &from_lockfile, "images/crates.txt", &committed)
    );
}

#[cfg(feature = "image-tests")]
mod support;

#[cfg(feature = "image-tests")]
mod built {
    use super::support::*;
    use super::*;
    use serde_json::Value;
    use std::io::{Read, Write};
    use std::path::Path;
    use std::time::{Duration, Instant};

    const IMAGES: [&str; 2] = ["controller", "agent"];

    fn json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    }

    fn blob(layout: &Path, digest: &str) -> Vec<u8> {
        std::fs::read(layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())).unwrap()
    }

    /// (name, version) of every Debian package images/debian.lock puts in `image`.
    fn pinned(image: &str) -> BTreeSet<String> {
        let lock = std::fs::read_to_string(root().join("images/debian.lock")).unwrap();
        lock.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f[4].split(',').any(|i| i == image))
            .map(|f| format!("deb {} {} {}", f[0], f[1], f[2]))
            .collect()
    }

    /// The image's SBOM as stored in its layout: index.json → the image index → the CycloneDX referrer.
    fn sbom_in_layout(layout: &Path) -> (Vec<u8>, Value) {
        let top = json(&layout.join("index.json"));
        let index: Value = serde_json::from_slice(&blob(layout, top["manifests"][0]["digest"].as_str().unwrap())).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        let image = manifests.iter().find(|m| m["platform"]["os"] == "linux").unwrap();
        let referrer = manifests.iter().find(|m| m["artifactType"] == "application/vnd.cyclonedx+json").expect("an SBOM in the image index");
        let artifact: Value = serde_json::from_slice(&blob(layout, referrer["digest"].as_str().unwrap())).unwrap();
        assert_eq!(artifact["subject"]["digest"], image["digest"], "the SBOM refers to the image");
        let image_manifest: Value = serde_json::from_slice(&blob(layout, image["digest"].as_str().unwrap())).unwrap();
        (blob(layout, artifact["layers"][0]["digest"].as_str().unwrap()), image_manifest)
    }

    fn components(sbom: &Value, purl_prefix: &str) -> Vec<Value> {
        let mut all = vec![sbom["metadata"]["component"].clone()];
        all.extend(sbom["components"].as_array().unwrap().iter().cloned());
        all.into_iter().filter(|c| c["purl"].as_str().is_some_and(|p| p.starts_with(purl_prefix))).collect()
    }

    fn licence(component: &Value) -> String {
        let names: Vec<String> = component["licenses"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|e| e["expression"].as_str().or(e["license"]["id"].as_str()).or(e["license"]["name"].as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.join(" AND ")
    }

    /// The Debian packages whose control files the image's layers hold (/var/lib/dpkg/status.d/, where scanners
    /// look), and whether any file of the image is a shell.
    fn unpack(layout: &Path, manifest: &Value, rootfs: &Path) -> (BTreeSet<String>, Vec<String>) {
        std::fs::create_dir_all(rootfs).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let path = layout.join("blobs/sha256").join(layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap());
            run(Command::new("tar").arg("-xzf").arg(&path).arg("-C").arg(rootfs));
        }
        let mut packages = BTreeSet::new();
        for entry in std::fs::read_dir(rootfs.join("var/lib/dpkg/status.d")).unwrap() {
            let control = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let field = |name: &str| control.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap().to_string();
            packages.insert(format!("deb {} {} {}", field("Package"), field("Version"), field("Architecture")));
        }
        let shells = ["sh", "bash", "dash", "busybox", "ash", "zsh"];
        let found = run(Command::new("find").arg(rootfs).args(["-name", "*sh", "-o", "-name", "busybox"]))
            .lines()
            .filter(|p| shells.contains(&Path::new(p).file_name().unwrap().to_str().unwrap()))
            .map(str::to_string)
            .collect();
        (packages, found)
    }

    /// podman with storage of its own (nothing left in the machine's image store) and resource limits this
    /// machine allows: podman's defaults (open files 1048576, processes 32768 or more) are above what the
    /// sandbox lets runc set here, so 4096 each, or the hard limit where that is lower.
    struct Podman {
        dir: tempfile::TempDir,
        limits: Vec<String>,
    }

    impl Podman {
        fn new() -> Podman {
            assert!(Command::new("podman").arg("--version").output().is_ok(), "podman is missing: scripts/test installs it (apt-get install podman)");
            let limit = |flag: &str| {
                let hard = run(Command::new("bash").args(["-c", &format!("ulimit -H{flag}")]));
                hard.trim().parse::<u64>().map_or(4096, |h| h.min(4096))
            };
            let (files, processes) = (limit("n"), limit("u"));
            let limits = vec!["--ulimit".into(), format!("nofile={files}:{files}"), "--ulimit".into(), format!("nproc={processes}:{processes}")];
            Podman { dir: tempfile::tempdir().unwrap(), limits }
        }

        fn command(&self) -> Command {
            let mut cmd = Command::new("podman");
            cmd.arg("--root").arg(self.dir.path().join("root")).arg("--runroot").arg(self.dir.path().join("run"));
            cmd
        }

        fn ok(&self, args: &[&str]) -> String {
            run(self.command().args(args))
        }

        /// `podman run --rm [OPTIONS] IMAGE ARGS`, with the machine's limits.
        fn run(&self, options: &[&str], image: &str, args: &[&str]) -> String {
            run(self.command().arg("run").arg("--rm").args(&self.limits).args(options).arg(image).args(args))
        }
    }

    impl Drop for Podman {
        fn drop(&mut self) {
            let _ = self.command().args(["rm", "--all", "--force"]).output();
            let _ = self.command().args(["system", "reset", "--force"]).output();
        }
    }

    fn http_get(port: u16, path: &str) -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    #[tokio::test]
    async fn two_builds_give_the_same_images_which_run_and_whose_sboms_list_every_crate_and_package() {
        let started = Instant::now();
        let out = tempfile::tempdir().unwrap();
        run(Command::new(root().join("scripts/image")).arg("check").arg("--out").arg(out.path()));
        eprintln!("scripts/image check: {:.0} s", started.elapsed().as_secs_f64());

        // Reproducible: the same digests and the same archive bytes (scripts/image check compares the archives;
        // here the two summaries are compared from outside).
        let (first, second) = (json(&out.path().join("check-1/images.json")), json(&out.path().join("check-2/images.json")));
        for image in IMAGES {
            for field in ["index_digest", "manifest_digest", "archive_sha256"] {
                assert_eq!(first[image][field], second[image][field], "{image} {field} differs between two builds");
            }
            eprintln!(
                "{image}: {} image {} index {}, {} bytes in layers ({} compressed)",
                first[image]["reference"],
                first[image]["manifest_digest"],
                first[image]["index_digest"],
                first[image]["layers_uncompressed_bytes"],
                first[image]["layers_compressed_bytes"]
            );
        }
        let controller_bytes = first["controller"]["layers_uncompressed_bytes"].as_u64().unwrap();
        assert!(controller_bytes < 40_000_000, "the controller image is {controller_bytes} bytes uncompressed (limit 40 MB)");

        // The SBOMs: in the layout, as the file beside it, with exactly the binary's crates and the image's packages.
        let built = out.path().join("check-1");
        for image in IMAGES {
            let layout = built.join(image);
            let (stored, manifest) = sbom_in_layout(&layout);
            assert!(stored == std::fs::read(built.join(format!("{image}.cdx.json"))).unwrap(), "{image}: the SBOM in the layout differs from {image}.cdx.json");
            let sbom: Value = serde_json::from_slice(&stored).unwrap();
            assert_eq!(sbom["bomFormat"], "CycloneDX");
            let crates: BTreeSet<String> = components(&sbom, "pkg:cargo/")
                .iter()
                .filter(|c| c["scope"] != "excluded")
                .map(|c| format!("crate {} {} {}", c["name"].as_str().unwrap(), c["version"].as_str().unwrap(), licence(c)).trim_end().to_string())
                .collect();
            let committed = committed_crates();
            assert!(
                crates == committed,
                "{image}: the SBOM's crates are not images/crates.txt\n{}",
                difference("the SBOM", &crates, "images/crates.txt", &committed)
            );
            let debs: BTreeSet<String> = components(&sbom, "pkg:deb/")
                .iter()
                .map(|c| {
                    let purl = c["purl"].as_str().unwrap();
                    let arch = purl.split("arch=").nth(1).unwrap().split('&').next().unwrap();
                    format!("deb {} {} {arch}", c["name"].as_str().unwrap(), c["version"].as_str().unwrap())
                })
                .collect();
            let (in_image, shells) = unpack(&layout, &manifest, &out.path().join(format!("rootfs-{image}")));
            assert!(debs == in_image, "{image}: SBOM and image disagree\n{}", difference("the SBOM", &debs, "the image", &in_image));
            assert!(debs == pinned(image), "{image}: SBOM and images/debian.lock disagree\n{}", difference("the SBOM", &debs, "the lock", &pinned(image)));
            if image == "controller" {
                assert!(shells.is_empty(), "the controller image holds a shell: {shells:?}");
            }
        }

        // They run: podman load of the OCI archives, podman run.
        let podman = Podman::new();
        let version = env!("CARGO_PKG_VERSION");
        let reference = |image: &str| first[image]["reference"].as_str().unwrap().to_string();
        for image in IMAGES {
            let loaded = podman.ok(&["load", "--input", built.join(format!("{image}.oci.tar")).to_str().unwrap()]);
            assert!(loaded.contains(&reference(image)), "{loaded}");
            assert_eq!(podman.run(&[], &reference(image), &["--version"]).trim(), format!("jpki-access {version}"));
            let help = podman.run(&[], &reference(image), &["--help"]);
            assert!(help.contains("controller") && help.contains("agent") && help.contains("Examples:"), "{help}");
        }

        // The controller as a non-root UID, for real: the image's controller against the test control plane, its
        // caches synced (/readyz), with the read verbs of its ClusterRole only, so it changes nothing of the other
        // tests (cargo runs one test binary at a time; no other controller runs meanwhile).
        let controller = reference("controller");
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, "image").await;
        let role = format!("{}-reader", ns.name);
        let fixture: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join("tests/fixtures/rbac/controller.yaml")).unwrap()).unwrap();
        let rules: Vec<Value> = fixture["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|rule| serde_json::to_value(rule).unwrap())
            .map(|mut rule| {
                let reads: Vec<Value> =
                    rule["verbs"].as_array().unwrap().iter().filter(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap())).cloned().collect();
                rule["verbs"] = Value::Array(reads);
                rule
            })
            .filter(|rule| !rule["verbs"].as_array().unwrap().is_empty())
            .collect();
        let rbac = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "controller", "namespace": ns.name}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": ns.name}]}]});
        let rbac_file = out.path().join("rbac.json");
        std::fs::write(&rbac_file, rbac.to_string()).unwrap();
        kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", path_str(&rbac_file)]);
        struct DeleteRole(String);
        impl Drop for DeleteRole {
            fn drop(&mut self) {
                let _ = kubectl(&["delete", "clusterrolebinding,clusterrole", &self.0, "--ignore-not-found"]);
            }
        }
        let _delete_role = DeleteRole(role.clone());
        let token = kubectl_ok(&["create", "token", "controller", "-n", &ns.name, "--duration", "1h"]);
        let admin: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap()).unwrap();
        let kubeconfig = serde_json::json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": serde_json::to_value(&admin["clusters"][0]["cluster"]).unwrap()}],
            "users": [{"name": "controller", "user": {"token": token.trim()}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "controller"}}], "current-context": "c"});
        let kubeconfig_file = out.path().join("kubeconfig");
        std::fs::write(&kubeconfig_file, kubeconfig.to_string()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let mount = format!("{}:/kubeconfig:ro", kubeconfig_file.display());
        // The controller signs the allowlist it publishes (issue #18): its key as the chart mounts it, from a file.
        // A copy readable by the image's non-root user (a checkout may keep the fixture at mode 600).
        let key_file = out.path().join("allowlist.key");
        std::fs::copy(signing_key(), &key_file).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let key = format!("{}:/signing/allowlist.key:ro", key_file.display());
        let options = [
            "run",
            "--detach",
            "--log-driver",
            "k8s-file",
            "--network",
            "host",
            "--volume",
            &mount,
            "--volume",
            &key,
            "--env",
            "KUBECONFIG=/kubeconfig",
            "--env",
            "JPKI_SIGNING_KEY_FILE=/signing/allowlist.key",
        ];
        let limits: Vec<&str> = podman.limits.iter().map(String::as_str).collect();
        let id = podman.ok(&[&options[..], &limits, &[&controller, "controller", "--no-leader-election", "--listen", &listen]].concat()).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The answer's status line: "HTTP/1.0 200 OK" (the server answers in the request's version).
            if http_get(port, "/readyz").is_some_and(|a| a.split_whitespace().nth(1) == Some("200")) {
                break;
            }
            let state = podman.ok(&["inspect", "--format", "{{.State.Status}}", &id]);
            assert!(
                state.trim() == "running" && Instant::now() < deadline,
                "the controller container is {} and not ready:\n{}",
                state.trim(),
                podman.ok(&["logs", &id])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &id]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        for field in ["Uid:", "Gid:"] {
            let ids = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert_eq!(ids.split_whitespace().skip(1).collect::<Vec<_>>(), ["65532"; 4], "the controller's {ids}");
        }
        eprintln!("the controller image's controller: ready against the control plane, running as UID and GID 65532");
        podman.ok(&["rm", "--force", &id]);

        // The agent's nft: its version, and the ruleset the image's own binary renders from examples/ applied in
        // the container's network namespace.
        let agent = reference("agent");
        let nft = podman.run(&["--entrypoint", "/usr/sbin/nft"], &agent, &["--version"]);
        assert!(nft.starts_with("nftables v1."), "{nft}");
        let examples = format!("{}:/examples:ro", root().join("examples").display());
        let ruleset = podman.run(&["--volume", &examples], &agent, &["render", "/examples", "--env", "production", "--format", "nft"]);
        let ruleset_file = out.path().join("ruleset.nft");
        std::fs::write(&ruleset_file, &ruleset).unwrap();
        let mount = format!("{}:/ruleset.nft:ro", ruleset_file.display());
        let applied = podman.run(
            &["--network", "none", "--cap-add", "NET_ADMIN", "--volume", &mount, "--entrypoint", "/usr/sbin/nft"],
            &agent,
            &["--echo", "--file", "/ruleset.nft"],
        );
        assert!(applied.contains("table inet jpki_"), "{applied}");
        eprintln!("image test: {:.0} s", started.elapsed().as_secs_f64());
    }
}

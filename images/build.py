#!/usr/bin/env python3
"""Builds the OCI images of jpki-access from the release binary and pinned Debian packages (see scripts/image,
which builds the binary and the crates' SBOM first and calls this).

  build.py lock  --lock images/debian.lock
  build.py build --lock images/debian.lock --binary PATH --cargo-sbom PATH --crates PATH --source DIR \\
                 --debs DIR --out DIR --version 0.1.0 --revision COMMIT --epoch SECONDS --registry ghcr.io/jpki-access
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import debian  # noqa: E402
import oci  # noqa: E402
import sbom  # noqa: E402

NONROOT = 65532
# The roots of each image's Debian packages; their Depends and Pre-Depends come along (images/debian.lock).
# base-files: /etc/os-release, by which scanners know the distribution; libc6 (and through it libgcc-s1): what
# the binary links against (checked with ldd below); ca-certificates: the trust store of the API client.
BASE_ROOTS = ["base-files", "libc6", "ca-certificates"]
IMAGES = {
    "controller": {
        "roots": BASE_ROOTS,
        "user": f"{NONROOT}:{NONROOT}",
        "cmd": ["controller"],
        "description": "jpki-access controller: JPKI registrations to NetworkPolicies, ingress rules and allowlists",
    },
    # The agent runs `nft` (nftables: /usr/sbin/nft and its libraries) as root with NET_ADMIN in the host's
    # network namespace.
    "agent": {
        "roots": BASE_ROOTS + ["nftables"],
        "user": "0:0",
        "cmd": ["agent"],
        "description": "jpki-access firewall agent: applies an environment's allowlist to nftables on an edge node",
    },
}
# Dependencies of maintainer scripts only, which never run in an image: ca-certificates' postinst (openssl,
# debconf; the certificate bundle is written below instead) and base-files' (awk).
LEFT_OUT = {"openssl", "debconf", "debconf-2.0", "awk"}
# Paths no program in the images reads: documentation (the copyright files stay), translations, shell
# completion, and libc6's character-set converters (gconv: iconv(3), which neither jpki-access nor nft calls).
DROPPED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/locale/",
    "usr/share/bug/",
    "usr/share/bash-completion/",
    "usr/share/zsh/",
    "usr/lib/x86_64-linux-gnu/gconv/",
)
# Per package, the only paths kept (prefixes): base-files holds the release files scanners read; ca-certificates'
# script that builds the bundle needs a shell, so the bundle is written here from the same certificates.
ONLY = {
    "base-files": ("etc/os-release", "usr/lib/os-release", "etc/debian_version"),
    "ca-certificates": ("usr/share/ca-certificates/",),
}
# usrmerge: Debian 12's packages still put files in /bin, /lib, ...; in the image those are links into /usr.
MERGED = ("bin", "sbin", "lib", "lib64")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


def log(message: str) -> None:
    print(f"image: {message}", file=sys.stderr)


def canonical(path: str) -> str:
    path = path.removeprefix("./").rstrip("/")
    top = path.split("/", 1)[0]
    return "usr/" + path if top in MERGED else path


def kept(package: str, path: str) -> bool:
    if path == f"usr/share/doc/{package}/copyright" or path == f"usr/share/doc/{package}":
        return True
    if package in ONLY and not path.startswith(ONLY[package]) and not path.startswith("usr/share/doc/"):
        return False
    return not path.startswith(DROPPED_PREFIXES) and path + "/" not in DROPPED_PREFIXES


def add_package(tree: oci.Tree, name: str, deb: Path) -> None:
    """The kept files of one .deb, with usrmerge paths, and its control file where scanners look for it."""
    for member, content in debian.members(deb):
        path = canonical(member.name)
        if not path or not kept(name, path):
            continue
        mode = member.mode & 0o1777  # no setuid or setgid bits in an image
        if member.isdir():
            tree.dir(path, mode)
        elif member.issym():
            tree.symlink(path, member.linkname)
        elif member.islnk():
            original = tree.entries[canonical(member.linkname)]
            tree.file(path, original.content, original.mode)
        elif member.isfile():
            tree.file(path, content or b"", mode)
        else:
            raise debian.Failure(f"{deb}: {member.name} is neither file, directory nor link")
    tree.file(f"var/lib/dpkg/status.d/{name}", debian.control(deb).encode())


def base_files(tree: oci.Tree) -> None:
    """What a Debian install would have written by its scripts: usrmerge links, users, the CA bundle."""
    for top in MERGED:
        tree.symlink(top, f"usr/{top}")
        tree.dir(f"usr/{top}")
    tree.file("etc/passwd", f"root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/usr/sbin/nologin\n".encode())
    tree.file("etc/group", f"root:x:0:\nnonroot:x:{NONROOT}:\n".encode())
    tree.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    tree.dir("root", 0o700)
    tree.dir("home/nonroot", 0o700, NONROOT, NONROOT)
    tree.dir("tmp", 0o1777)
    # As update-ca-certificates writes it: every certificate in order, each ending with a newline.
    certificates = sorted(p for p in tree.entries if p.startswith("usr/share/ca-certificates/") and p.endswith(".crt"))
    if certificates:
        bundle = b"".join(c if c.endswith(b"\n") else c + b"\n" for c in (tree.entries[p].content for p in certificates))
        tree.file(CA_BUNDLE, bundle)


def linked_packages(binary: Path) -> set[str]:
    """The Debian packages of the host that hold the libraries `ldd` finds for the binary."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    packages = set()
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if not path.startswith("/"):
            continue  # linux-vdso.so.1: the kernel's
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode != 0:
            resolved = str(Path(path).resolve())
            owner = subprocess.run(["dpkg", "-S", resolved], capture_output=True, text=True)
        if owner.returncode != 0:
            raise debian.Failure(f"{binary} links {path}, which no Debian package of this machine holds (dpkg -S)")
        packages.add(owner.stdout.split(":", 1)[0])
    return packages


def cmd_lock(args) -> None:
    images = {name: (spec["roots"], LEFT_OUT) for name, spec in IMAGES.items()}
    pins = debian.lock(images)
    debian.write_lock(args.lock, pins)
    log(f"wrote {args.lock}: {len(pins)} packages")


def cmd_build(args) -> None:
    pins = debian.read_lock(args.lock)
    missing = linked_packages(args.binary) - {p.name for p in pins if "controller" in p.images}
    if missing:
        raise debian.Failure(f"{args.binary} links libraries of {sorted(missing)}, which the controller image lacks: add them to BASE_ROOTS in images/build.py and run scripts/image lock")
    debs = debian.fetch(pins, args.debs, log)
    epoch = args.epoch
    in_all = [p for p in pins if all(image in p.images for image in IMAGES)]

    base = oci.Tree()
    for pin in in_all:
        add_package(base, pin.name, debs[pin.name])
    base_files(base)
    app = oci.Tree()
    app.file("usr/bin/jpki-access", args.binary.read_bytes(), 0o755)
    runtime = set()
    for line in args.crates.read_text().splitlines():
        if line.startswith("crate "):
            runtime.add(tuple(line.split()[1:3]))
    cargo_sbom = sbom.crates_sbom(json.loads(args.cargo_sbom.read_text()), str(args.source), runtime)
    listed = set(sbom.crates(cargo_sbom))
    expected = {line for line in args.crates.read_text().splitlines() if line.startswith("crate ")}
    if listed != expected:
        raise debian.Failure(f"cargo-cyclonedx and cargo tree disagree on the binary's crates: {sorted(listed ^ expected)}")

    args.out.mkdir(parents=True, exist_ok=True)
    base_tar, app_tar = base.tar(epoch), app.tar(epoch)
    summary = {}
    for image, spec in IMAGES.items():
        layout = oci.Layout()
        tars = [base_tar]
        history = [f"Debian packages {' '.join(p.name for p in in_all)}; users root and nonroot ({NONROOT}); CA bundle"]
        own = [p for p in pins if image in p.images and p not in in_all]
        if own:
            extra = oci.Tree()
            for pin in own:
                add_package(extra, pin.name, debs[pin.name])
            tars.append(extra.tar(epoch))
            history.append(f"Debian packages {' '.join(p.name for p in own)}")
        tars.append(app_tar)
        history.append(f"/usr/bin/jpki-access {args.version} (cargo build --release --locked)")
        layers = [layout.layer(tar) for tar in tars]
        name = f"{args.registry}/{image}"
        labels = {
            "org.opencontainers.image.title": f"jpki-access {image}",
            "org.opencontainers.image.description": spec["description"],
            "org.opencontainers.image.version": args.version,
            "org.opencontainers.image.revision": args.revision,
            "org.opencontainers.image.created": oci.rfc3339(epoch),
            "org.opencontainers.image.licenses": "Apache-2.0",
        }
        config = {
            "User": spec["user"],
            "Entrypoint": ["/usr/bin/jpki-access"],
            "Cmd": spec["cmd"],
            "Env": [PATH_ENV, f"SSL_CERT_FILE=/{CA_BUNDLE}"],
            "WorkingDir": "/",
        }
        manifest = layout.image(layers, config, history, epoch, labels)
        image_pins = [p for p in pins if image in p.images]
        bom = sbom.image_sbom(cargo_sbom, image_pins, image, args.version, manifest["digest"], epoch)
        bom_bytes = (json.dumps(bom, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        attached = layout.attachment(manifest, bom_bytes, sbom.MEDIA_TYPE, f"{image}.cdx.json")
        index = layout.tag([manifest, attached], name, args.version)
        layout.docker_compatible(manifest, name, args.version)
        layout.write(args.out / image, args.out / f"{image}.oci.tar", epoch)
        (args.out / f"{image}.cdx.json").write_bytes(bom_bytes)
        summary[image] = {
            "name": name,
            "tag": args.version,
            "reference": f"{name}:{args.version}",
            "index_digest": index["digest"],
            "manifest_digest": manifest["digest"],
            "archive_sha256": debian.sha256_file(args.out / f"{image}.oci.tar"),
            "layers_compressed_bytes": sum(d["size"] for d, _ in layers),
            "layers_uncompressed_bytes": sum(len(t) for t in tars),
            "debian_packages": [f"{p.name}={p.version}" for p in image_pins],
        }
    (args.out / "images.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    for image, s in summary.items():
        log(f"{s['reference']}: image {s['manifest_digest']} (linux/amd64; with the SBOM, index {s['index_digest']}): {s['layers_uncompressed_bytes'] / 1e6:.1f} MB, {s['layers_compressed_bytes'] / 1e6:.1f} MB compressed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock")
    lock.add_argument("--lock", type=Path, required=True)
    build = sub.add_parser("build")
    build.add_argument("--lock", type=Path, required=True)
    build.add_argument("--binary", type=Path, required=True)
    build.add_argument("--cargo-sbom", type=Path, required=True)
    build.add_argument("--crates", type=Path, required=True, help="'crate NAME VERSION LICENCE' lines from cargo tree")
    build.add_argument("--source", type=Path, required=True, help="the source tree cargo-cyclonedx read")
    build.add_argument("--debs", type=Path, required=True)
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--version", required=True)
    build.add_argument("--revision", required=True)
    build.add_argument("--epoch", type=int, required=True)
    build.add_argument("--registry", required=True)
    args = parser.parse_args()
    try:
        {"lock": cmd_lock, "build": cmd_build}[args.command](args)
    except (debian.Failure, subprocess.CalledProcessError, OSError) as e:
        log(f"FAILED: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()

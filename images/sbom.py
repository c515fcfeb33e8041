"""The SBOM of each image: CycloneDX JSON with the Rust crates of the binary (from cargo-cyclonedx, licences
included) and the image's Debian packages (from images/debian.lock), made reproducible (the serial number is
derived from the image's digest, the timestamp is the commit's).

Also the one-line-per-component summary that images/crates.txt and the tests compare:
  crate NAME VERSION LICENCE        every crate compiled into the binary (build-time-only crates excluded)
  deb NAME VERSION ARCH             every Debian package in the image
"""

from __future__ import annotations

import copy
import urllib.parse
import uuid

MEDIA_TYPE = "application/vnd.cyclonedx+json"


def _license(component: dict) -> str:
    """A component's licence as one SPDX expression ('' when none is declared)."""
    names = []
    for entry in component.get("licenses", []):  # cargo-cyclonedx writes one expression
        if "expression" in entry:
            names.append(entry["expression"])
        elif "license" in entry:
            names.append(entry["license"].get("id") or entry["license"].get("name", ""))
    return " AND ".join(n for n in names if n)


def crates(bom: dict) -> list[str]:
    """'crate NAME VERSION LICENCE' of every crate the SBOM says is in the binary (scope other than
    'excluded', which cargo-cyclonedx gives to build dependencies)."""
    lines = []
    root = bom.get("metadata", {}).get("component", {})
    for component in [root, *bom.get("components", [])]:
        if component.get("purl", "").startswith("pkg:cargo/") and component.get("scope") != "excluded":
            lines.append(f"crate {component['name']} {component['version']} {_license(component)}".rstrip())
    return sorted(set(lines))


def debs(bom: dict) -> list[str]:
    lines = []
    for component in bom.get("components", []):
        if component.get("purl", "").startswith("pkg:deb/"):
            arch = urllib.parse.parse_qs(component["purl"].split("?", 1)[1])["arch"][0]
            lines.append(f"deb {component['name']} {component['version']} {arch}")
    return sorted(lines)


def _deb_component(pin, release: str) -> dict:
    version = urllib.parse.quote(pin.version, safe="")
    purl = f"pkg:deb/debian/{pin.name}@{version}?arch={pin.arch}&distro=debian-{release}"
    return {
        "type": "application" if pin.name == "nftables" else "library",
        "bom-ref": purl,
        "name": pin.name,
        "version": pin.version,
        "purl": purl,
        "hashes": [{"alg": "SHA-256", "content": pin.sha256}],
        "description": f"Debian {release} package",
    }


def _relocatable(value, source: str):
    """`value` with the source tree's absolute path (in cargo-cyclonedx's bom-refs of the workspace crate, cargo's
    package id 'path+file://DIR#NAME@VERSION', or 'path+file://DIR#VERSION' when DIR is named NAME) made independent
    of where the tree was: two clones must give the same SBOM."""
    if isinstance(value, dict):
        return {k: _relocatable(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocatable(v, source) for v in value]
    prefix = f"path+file://{source}#"
    if isinstance(value, str) and value.startswith(prefix):
        fragment = value[len(prefix) :]
        if "@" not in fragment:
            fragment = f"{source.rsplit('/', 1)[-1]}@{fragment}"
        return "path+file:///jpki-access#" + fragment
    return value


def crates_sbom(cargo_bom: dict, source: str, runtime: set[tuple[str, str]]) -> dict:
    """cargo-cyclonedx's SBOM, relocatable, with every crate that is not compiled into the binary marked scope
    'excluded' as cargo-cyclonedx marks build dependencies: proc-macros and their dependencies, which run in the
    compiler only. `runtime` is (name, version) of the crates cargo tree -e normal,no-proc-macro lists."""
    bom = _relocatable(copy.deepcopy(cargo_bom), source.rstrip("/"))
    for component in bom.get("components", []):
        if component.get("purl", "").startswith("pkg:cargo/") and (component["name"], component["version"]) not in runtime:
            component["scope"] = "excluded"
    return bom


def image_sbom(cargo_bom: dict, pins: list, image: str, version: str, manifest_digest: str, epoch: int) -> dict:
    """The image's SBOM: the container is the described component; it holds the jpki-access binary (whose
    crates and their dependency graph come from crates_sbom) and the Debian packages."""
    from oci import rfc3339

    bom = copy.deepcopy(cargo_bom)
    binary = bom["metadata"]["component"]
    # No registry in the SBOM: the images' digests stay the same wherever they are pushed or loaded.
    purl = f"pkg:oci/{image}@{urllib.parse.quote(manifest_digest, safe='')}?arch=amd64&tag={version}"
    container = {"type": "container", "bom-ref": purl, "name": f"jpki-access-{image}", "version": version, "purl": purl}
    bom["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, purl))
    bom["metadata"]["timestamp"] = rfc3339(epoch)
    bom["metadata"]["component"] = container
    # The Debian release is base-files' major version (12.4+deb12u15: Debian 12).
    release = next(p.version.split(".")[0] for p in pins if p.name == "base-files")
    packages = [_deb_component(p, release) for p in pins]
    bom["components"] = [binary, *bom.get("components", []), *packages]
    bom.setdefault("dependencies", []).append({"ref": purl, "dependsOn": [binary["bom-ref"], *(p["bom-ref"] for p in packages)]})
    return bom

"""Debian packages of the images: the lock file, fetching with apt-get, and reading a .deb's files.

The lock (images/debian.lock) pins every package of every image: name, version, architecture, the sha256 of the
.deb from the signed apt index, and the images it goes into. `lock()` rewrites it from the apt sources (the
candidate version of each package in the dependency closure of the images' roots); `fetch()` downloads exactly
the pinned versions with `apt-get download` and checks their sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import tarfile
from pathlib import Path

LOCK_HEADER = """\
# Debian packages of the jpki-access images, pinned: scripts/image builds from exactly these .deb files.
# Written by `scripts/image lock` from the apt sources (the candidate version of every package in the
# dependency closure of each image's roots; see IMAGES in images/build.py). Changing a line changes the images.
# Columns: package version architecture sha256-of-the-.deb images
"""


class Failure(Exception):
    """An error to print as it is (it names what failed)."""


@dataclasses.dataclass(frozen=True)
class Pin:
    name: str
    version: str
    arch: str
    sha256: str
    images: tuple[str, ...]

    @property
    def filename(self) -> str:
        # apt-get download's file name: an epoch's colon is written %3a.
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def read_lock(path: Path) -> list[Pin]:
    pins = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 5 or not re.fullmatch(r"[0-9a-f]{64}", fields[3]):
            raise Failure(f"{path}:{number}: expected 'package version arch sha256 images', got {line!r}")
        pins.append(Pin(fields[0], fields[1], fields[2], fields[3], tuple(fields[4].split(","))))
    return pins


def write_lock(path: Path, pins: list[Pin]) -> None:
    lines = [f"{p.name} {p.version} {p.arch} {p.sha256} {','.join(p.images)}\n" for p in sorted(pins, key=lambda p: p.name)]
    path.write_text(LOCK_HEADER + "".join(lines))


def _candidate(name: str) -> dict[str, str]:
    """The apt index record of a package's candidate version (apt-cache show --no-all-versions)."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise Failure(f"apt-cache show {name}: no such package in the apt sources (run apt-get update?) {out.stderr.strip()}")
    record: dict[str, str] = {}
    key = None
    for line in out.stdout.split("\n\n")[0].splitlines():
        if line.startswith((" ", "\t")) and key:
            record[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            record[key] = value.strip()
    return record


def _dependencies(record: dict[str, str]) -> list[list[str]]:
    """Depends and Pre-Depends as groups of alternatives, names only (versions and arch qualifiers dropped)."""
    groups = []
    for field in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in record.get(field, "").split(","))):
            groups.append([re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0] for alt in group.split("|")])
    return groups


def lock(images: dict[str, tuple[list[str], set[str]]]) -> list[Pin]:
    """Pins of the closure of each image's (roots, left-out) under Depends and Pre-Depends, first alternative
    first. The left-out packages are dependencies of maintainer scripts that never run in an image (e.g.
    ca-certificates' openssl and debconf: scripts/image writes the certificate bundle itself)."""
    records: dict[str, dict[str, str]] = {}
    members: dict[str, list[str]] = {}
    for image, (roots, left_out) in images.items():
        todo, seen = list(roots), set()
        while todo:
            name = todo.pop()
            if name in seen or name in left_out:
                continue
            seen.add(name)
            if name not in records:
                records[name] = _candidate(name)
            for alternatives in _dependencies(records[name]):
                if any(a in left_out for a in alternatives):
                    continue
                todo.append(next((a for a in alternatives if a in records or _has_candidate(a)), alternatives[0]))
        for name in seen:
            members.setdefault(name, []).append(image)
    return [
        Pin(n, r["Version"], r["Architecture"], r["SHA256"], tuple(members[n]))
        for n, r in sorted(records.items())
        if n in members
    ]


def _has_candidate(name: str) -> bool:
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(pins: list[Pin], cache: Path, log) -> dict[str, Path]:
    """The .deb file of every pin, from the cache or downloaded with apt-get (once), sha256 checked."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pins if not (cache / p.filename).exists() or sha256_file(cache / p.filename) != p.sha256]
    if missing:
        log(f"downloading {len(missing)} Debian packages with apt-get into {cache}")
        wanted = [f"{p.name}={p.version}" for p in missing]
        # As root into a directory the _apt user cannot write: download as root rather than warn about it.
        download = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *wanted]
        if subprocess.run(download, cwd=cache, capture_output=True).returncode != 0:
            # Lists may be missing or stale on a fresh machine: update once, then try again.
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            out = subprocess.run(download, cwd=cache, capture_output=True, text=True)
            if out.returncode != 0:
                raise Failure(
                    f"apt-get download {' '.join(wanted)} failed:\n{out.stderr.strip()}\n"
                    "A pinned version may no longer be served (Debian drops superseded versions): "
                    "`scripts/image lock` pins the current ones (the images change)."
                )
    paths = {}
    for p in pins:
        path = cache / p.filename
        if not path.exists():
            raise Failure(f"apt-get download {p.name}={p.version} wrote no {path}")
        actual = sha256_file(path)
        if actual != p.sha256:
            raise Failure(f"{path}: sha256 {actual}, but images/debian.lock pins {p.sha256}")
        paths[p.name] = path
    return paths


def control(deb: Path) -> str:
    """The package's control file (for /var/lib/dpkg/status.d/, where scanners look for packages)."""
    out = subprocess.run(["dpkg-deb", "--info", str(deb), "control"], capture_output=True, text=True)
    if out.returncode != 0:
        raise Failure(f"dpkg-deb --info {deb} control: {out.stderr.strip()}")
    return out.stdout


def members(deb: Path):
    """(member, content) of each entry of the package's data archive, content None for all but regular files."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as data:
        for member in data:
            content = data.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            yield member, content
    if proc.wait() != 0:
        raise Failure(f"dpkg-deb --fsys-tarfile {deb} failed")

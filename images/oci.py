"""Reproducible OCI layers, images and layouts, written with the standard library alone.

Why our own writer: what makes an image reproducible is the exact bytes of each layer's tar (entry order, owners,
modes, timestamps, header format) and of each JSON document. umoci and buildah take timestamps and owners from a
directory on disk and add time-stamped history; crane appends tarballs someone else wrote. Here every byte is
decided below: entries sorted by path, owner 0:0 (or the numeric owner given) with no user or group names,
every mtime the commit's time (SOURCE_DATE_EPOCH), PAX headers only where USTAR cannot hold a name, gzip with
no name and mtime 0, JSON with sorted keys. Real tools judge the result: skopeo, umoci, runc and podman read
these layouts in the image tests (tests/image.rs).
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"


@dataclasses.dataclass
class Entry:
    kind: bytes  # tarfile.DIRTYPE, REGTYPE or SYMTYPE
    mode: int
    uid: int = 0
    gid: int = 0
    content: bytes = b""
    target: str = ""


class Tree:
    """The files of one layer, by path (no leading slash)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.entries[path] = Entry(tarfile.DIRTYPE, mode, uid, gid)

    def file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self.entries[path] = Entry(tarfile.REGTYPE, mode, content=content)

    def symlink(self, path: str, target: str) -> None:
        self.entries[path] = Entry(tarfile.SYMTYPE, 0o777, target=target)

    def size(self) -> int:
        return sum(len(e.content) for e in self.entries.values())

    def tar(self, epoch: int) -> bytes:
        """The layer as an uncompressed tar: every parent directory present (0755 root unless given), entries
        in path order (a directory before what it holds), one timestamp, numeric owners."""
        entries = dict(self.entries)
        for path in list(entries):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                entries.setdefault("/".join(parts[:depth]), Entry(tarfile.DIRTYPE, 0o755))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(entries, key=lambda p: p.split("/")):
                entry = entries[path]
                info = tarfile.TarInfo(path + "/" if entry.kind == tarfile.DIRTYPE else path)
                info.type, info.mode, info.mtime = entry.kind, entry.mode, epoch
                info.uid, info.gid, info.uname, info.gname = entry.uid, entry.gid, "", ""
                info.linkname = entry.target
                info.size = len(entry.content)
                tar.addfile(info, io.BytesIO(entry.content) if entry.kind == tarfile.REGTYPE else None)
        return out.getvalue()


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Layout:
    """An OCI image layout held in memory until written: blobs by digest and the top-level index."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.index: list[dict] = []
        self.docker_manifest: list[dict] = []

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def layer(self, tar: bytes) -> tuple[dict, str]:
        """A gzip layer's descriptor and its diff_id (the digest of the uncompressed tar)."""
        gz = gzip.compress(tar, compresslevel=9, mtime=0)
        return self.blob(gz, MEDIA_LAYER), "sha256:" + hashlib.sha256(tar).hexdigest()

    def image(self, layers: list[tuple[dict, str]], config: dict, history: list[str], epoch: int, labels: dict) -> dict:
        """An amd64 Linux image manifest over the given layers; `config` is the runtime part (User, Entrypoint,
        Cmd, Env, WorkingDir)."""
        created = rfc3339(epoch)
        image_config = {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {**config, "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
            "history": [{"created": created, "created_by": h, "comment": "scripts/image"} for h in history],
        }
        config_desc = self.blob(canonical_json(image_config), MEDIA_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc,
            "layers": [desc for desc, _ in layers],
            "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")},
        }
        return self.blob(canonical_json(manifest), MEDIA_MANIFEST, platform={"architecture": "amd64", "os": "linux"})

    def attachment(self, subject: dict, data: bytes, media_type: str, title: str) -> dict:
        """An artifact manifest that refers to `subject` (OCI 1.1 referrer, e.g. an SBOM), listed in an index as an
        attestation the way BuildKit lists its own (platform unknown/unknown) so runtimes never try to run it."""
        subject_desc = {k: subject[k] for k in ("mediaType", "digest", "size")}
        empty = self.blob(b"{}", MEDIA_EMPTY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": media_type,
            "config": empty,
            "layers": [self.blob(data, media_type, annotations={"org.opencontainers.image.title": title})],
            "subject": subject_desc,
        }
        return self.blob(
            canonical_json(manifest),
            MEDIA_MANIFEST,
            artifactType=media_type,
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": subject["digest"]},
        )

    def tag(self, manifests: list[dict], name: str, tag: str) -> dict:
        """An image index over `manifests`, named in index.json (not in any blob, so the digests do not depend on
        the name) for podman and skopeo (ref.name: the tag) and for containerd and Docker (io.containerd.image.name:
        the full name)."""
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests}
        desc = self.blob(canonical_json(index), MEDIA_INDEX)
        self.index.append({**desc, "annotations": {"io.containerd.image.name": f"{name}:{tag}", "org.opencontainers.image.ref.name": tag}})
        return desc

    def docker_compatible(self, image: dict, name: str, tag: str) -> None:
        """manifest.json, which `docker load` before Docker 25 reads instead of index.json."""
        manifest = json.loads(self.blobs[image["digest"]])
        self.docker_manifest.append(
            {
                "Config": "blobs/sha256/" + manifest["config"]["digest"].split(":")[1],
                "RepoTags": [f"{name}:{tag}"],
                "Layers": ["blobs/sha256/" + layer["digest"].split(":")[1] for layer in manifest["layers"]],
            }
        )

    def files(self) -> dict[str, bytes]:
        files = {
            "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
            "index.json": canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": self.index}),
        }
        if self.docker_manifest:
            files["manifest.json"] = canonical_json(self.docker_manifest)
        for digest, data in self.blobs.items():
            files["blobs/sha256/" + digest.split(":")[1]] = data
        return files

    def write(self, directory: Path, archive: Path, epoch: int) -> None:
        """The layout as a directory and as a reproducible tar of the same files (an OCI archive)."""
        files = self.files()
        if directory.exists():
            for old in sorted(directory.rglob("*"), reverse=True):
                old.rmdir() if old.is_dir() else old.unlink()
        for path, data in files.items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_bytes(data)
        tree = Tree()
        for path, data in files.items():
            tree.file(path, data)
        archive.write_bytes(tree.tar(epoch))

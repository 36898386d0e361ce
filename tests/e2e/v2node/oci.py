"""OCI image archives made from a folder, without Docker: what `ctr images import` takes, in the guest or on the host.

One uncompressed layer (the guest's import would spend its time unzipping under TCG), owned by root with every mtime
0, so the same folder gives the same digests. containerd names the image from the index's
`io.containerd.image.name` annotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

EPOCH = 0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def layer_tar(root: Path) -> bytes:
    """The folder as a tar, sorted, owned by root, mtime 0."""
    paths: list[Path] = []
    for parent, folders, files in os.walk(root):
        folders.sort()
        paths.extend(Path(parent) / name for name in folders + files)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(paths, key=lambda found: str(found.relative_to(root))):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = EPOCH
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))


def add_blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    """The blob under its digest; the digest and size, as a descriptor names them."""
    digest = hashlib.sha256(data).hexdigest()
    add(tar, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_archive(
    root: Path,
    out: Path,
    name: str,
    entrypoint: list[str],
    user: str,
    workdir: str = "/",
    env: tuple[str, ...] = (),
) -> int:
    """The image `name` (repository:tag) of the folder `root`, as an oci-layout tar at `out`; the layer's size."""
    layer = layer_tar(root)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": [f"PATH={PATH}", *env], "WorkingDir": workdir, "User": user},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "tests/e2e/v2node/oci.py"}],
    }
    with tarfile.open(out, "w") as tar:
        add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        layer_ref = add_blob(tar, layer)
        config_ref = add_blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_ref}],
        }
        manifest_ref = add_blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_ref,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
        add(tar, "index.json", json.dumps(index).encode())
    return len(layer)

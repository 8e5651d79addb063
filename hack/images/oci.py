#!/usr/bin/env python3
"""Write one OCI image archive (the tar that `ctr images import` reads) from a list of files.

Used by hack/images.sh; no Docker, no registry. One image = one gzip'd layer + config + manifest:

    oci.py --entries ENTRIES --config CONFIG.json --ref popup.local/NAME:TAG \
           --blobs CACHE/blobs --out NAME.tar

ENTRIES has one tab-separated line per path in the image (paths without the leading slash):

    dir   PATH MODE UID GID
    file  PATH MODE UID GID SOURCE      (content copied from SOURCE on this machine)
    link  PATH TARGET                   (symlink, owned by root)

Parent directories that are not listed are added as 0755 root:root. CONFIG.json is the image's
`config` object (User, Env, Entrypoint, Cmd, ...); architecture/os/rootfs/history are added here.

Reproducible: entries sorted by path, mtime 0, numeric owners without names, gzip without name or
time, so the same inputs give the same digests. The layer is cached in --blobs under a key made of the
entries, the sources' sha256 and this file's own sha256, so a second image with the same files (the
two Redis images) and a re-run with unchanged inputs reuse it. The archive is rewritten only when its
manifest digest or name changed. Prints the archive path.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

EPOCH = "1970-01-01T00:00:00Z"
CHUNK = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def die(msg):
    print(f"[oci] ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_entries(path):
    entries = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            kind, name = parts[0], parts[1].strip("/")
            if not name or ".." in name.split("/"):
                die(f"{path}:{n}: bad path {parts[1]!r}")
            if kind == "dir" and len(parts) == 5:
                e = {"kind": kind, "mode": int(parts[2], 8), "uid": int(parts[3]), "gid": int(parts[4])}
            elif kind == "file" and len(parts) == 6:
                e = {"kind": kind, "mode": int(parts[2], 8), "uid": int(parts[3]), "gid": int(parts[4]),
                     "src": parts[5]}
                if not os.path.isfile(e["src"]):
                    die(f"{path}:{n}: source {e['src']} is not a file")
            elif kind == "link" and len(parts) == 3:
                e = {"kind": kind, "target": parts[2]}
            else:
                die(f"{path}:{n}: cannot parse {line!r}")
            if name in entries and entries[name] != e:
                die(f"{path}:{n}: {name} listed twice with different contents")
            entries[name] = e
    # Implicit parents, so that every path's directory exists in the layer with known metadata.
    for name in list(entries):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in entries:
                entries[parent] = {"kind": "dir", "mode": 0o755, "uid": 0, "gid": 0}
            elif entries[parent]["kind"] != "dir":
                die(f"{parent} is needed as a directory for {name}")
    return entries


def layer_key(entries):
    """Everything the layer's bytes depend on."""
    h = hashlib.sha256()
    h.update(sha256_file(__file__).encode())
    for name in sorted(entries):
        e = dict(entries[name])
        if e["kind"] == "file":
            e["content"] = sha256_file(e.pop("src"))
        h.update(json.dumps([name, e], sort_keys=True).encode())
    return h.hexdigest()


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `inner`."""

    def __init__(self, inner):
        self.inner, self.h, self.n = inner, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        self.inner.write(b)
        return len(b)


def write_layer(entries, blobs):
    """Write the gzip'd tar into blobs/sha256/, return (digest, diff_id, size)."""
    os.makedirs(os.path.join(blobs, "sha256"), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb") as raw:
            gz_hash = HashingWriter(raw)
            # mtime=0 and no file name in the gzip header: the same tar always gives the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=gz_hash, mtime=0, compresslevel=6) as gz:
                tar_hash = HashingWriter(gz)
                with tarfile.open(fileobj=tar_hash, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                    for name in sorted(entries):
                        e = entries[name]
                        ti = tarfile.TarInfo(name)
                        ti.mtime = 0
                        ti.uname = ti.gname = ""
                        if e["kind"] == "link":
                            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e["target"], 0o777
                            tar.addfile(ti)
                            continue
                        ti.mode, ti.uid, ti.gid = e["mode"], e["uid"], e["gid"]
                        if e["kind"] == "dir":
                            ti.type = tarfile.DIRTYPE
                            tar.addfile(ti)
                        else:
                            ti.size = os.path.getsize(e["src"])
                            with open(e["src"], "rb") as f:
                                tar.addfile(ti, f)
        digest = gz_hash.h.hexdigest()
        os.replace(tmp, os.path.join(blobs, "sha256", digest))
        return "sha256:" + digest, "sha256:" + tar_hash.h.hexdigest(), gz_hash.n
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", required=True)
    ap.add_argument("--config", required=True, help="JSON file: the image config's `config` object")
    ap.add_argument("--ref", required=True, help="full name, e.g. popup.local/pause:1.0")
    ap.add_argument("--blobs", required=True, help="cache directory for layers")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    repo, sep, tag = args.ref.rpartition(":")
    if not sep or "/" in tag or not repo:
        die(f"--ref {args.ref!r} needs a tag (NAME:TAG)")

    entries = parse_entries(args.entries)
    key = layer_key(entries)
    index_file = os.path.join(args.blobs, "layers", key + ".json")
    layer = None
    if os.path.exists(index_file):
        with open(index_file) as f:
            layer = json.load(f)
        if not os.path.exists(os.path.join(args.blobs, "sha256", layer["digest"].split(":", 1)[1])):
            layer = None
    if layer is None:
        print(f"[oci] writing layer for {args.ref} ({len(entries)} paths)", file=sys.stderr)
        digest, diff_id, size = write_layer(entries, args.blobs)
        layer = {"digest": digest, "diff_id": diff_id, "size": size}
        os.makedirs(os.path.dirname(index_file), exist_ok=True)
        with open(index_file + ".tmp", "w") as f:
            json.dump(layer, f)
        os.replace(index_file + ".tmp", index_file)
    else:
        print(f"[oci] layer for {args.ref} unchanged ({layer['digest'][:19]})", file=sys.stderr)

    with open(args.config) as f:
        image_config = json.load(f)
    config = canonical({
        "created": EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
        "history": [{"created": EPOCH, "created_by": "hack/images.sh"}],
    })
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer["digest"], "size": layer["size"]}],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    # containerd names the image after io.containerd.image.name; the OCI annotation holds only the
    # tag, as the OCI layout spec means it (and as `ctr images export` writes it).
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.ref, "org.opencontainers.image.ref.name": tag},
        }],
    })

    stamp_file = args.out + ".stamp"
    # hack/images.sh reads the layer digest (third field) to prune layers no archive uses.
    stamp = f"{args.ref} {manifest_digest} {layer['digest']}\n"
    if os.path.exists(args.out) and os.path.exists(stamp_file) and open(stamp_file).read() == stamp:
        print(f"[oci] {args.out} unchanged ({args.ref}, manifest {manifest_digest[:19]})", file=sys.stderr)
        print(args.out)
        return

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        def add_bytes(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tar.addfile(ti, io.BytesIO(data))

        def add_dir(name):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime, ti.mode = tarfile.DIRTYPE, 0, 0o755
            tar.addfile(ti)

        add_bytes("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
        add_bytes("index.json", index)
        add_dir("blobs")
        add_dir("blobs/sha256")
        add_bytes("blobs/sha256/" + config_digest.split(":", 1)[1], config)
        add_bytes("blobs/sha256/" + manifest_digest.split(":", 1)[1], manifest)
        blob = os.path.join(args.blobs, "sha256", layer["digest"].split(":", 1)[1])
        ti = tarfile.TarInfo("blobs/sha256/" + layer["digest"].split(":", 1)[1])
        ti.size, ti.mtime, ti.mode = os.path.getsize(blob), 0, 0o644
        with open(blob, "rb") as f:
            tar.addfile(ti, f)
    os.replace(tmp, args.out)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    print(f"[oci] wrote {args.out} ({args.ref}, manifest {manifest_digest[:19]}, layer {layer['size']} bytes)",
          file=sys.stderr)
    print(args.out)


if __name__ == "__main__":
    main()

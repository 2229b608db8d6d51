"""Releases on a static host (issue 18): `mpota release publish|show|nginx`.

Layout (any web server, CDN or S3-compatible bucket serves it as files):
    <root>/<channel>/manifest.json   the signed manifest of the channel's current release
    <root>/files/<sha256>.bin        images, named by the SHA-256 of the bytes served
    <root>/files/<sha256>.mpz        compressed images and patches (.zz, .gz: zlib, gzip)
The manifest is `mpota manifest`'s (form 2, signed) with "firmware" and the patches' "file"
relative to it ("../files/<sha256>.bin"), plus "channel", "release" ("<version>+<build[:8]>"),
"sequence" (grows with every manifest the channel gets), "rollout" ({"stages": [[basis points,
Unix time], ...]} or {"start", "start_bp", "duration"}) and "halted". The device side is
python/ota/fleet.py. Files go up first, the manifest last, so a manifest never names a file that
is not there yet; a manifest is replaced atomically (temp + rename), with a modification time
after the old one's, so that its ETag and Last-Modified change even within one second."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from . import manifest as mf

CHANNEL = re.compile(r"[a-z0-9_-]{1,32}")
FULL = 10000  # basis points
DEFAULT_STAGES = "1@0,5@24h,25@48h,100@72h"
MANIFEST_CACHE = "no-cache"  # revalidate every time (a 304 when nothing changed)
FILE_CACHE = "public, max-age=31536000, immutable"  # named by content: never stale


def duration(s: str) -> int:
    """Seconds from "90", "90s", "30m", "24h" or "3d"."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", s.strip())
    if not m:
        raise ValueError(f"not a duration: {s!r} (e.g. 3600, 30m, 24h, 3d)")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def percent_bp(s: str) -> int:
    """Basis points from a percentage ("1", "0.5", "100%")."""
    try:
        p = float(s.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"not a percentage: {s!r}") from None
    if not 0 <= p <= 100:
        raise ValueError(f"a percentage is between 0 and 100, not {s!r}")
    return round(p * 100)


def when(s: str | None) -> int:
    """Unix time from None or "now", an integer, or UTC "YYYY-MM-DDTHH:MM:SSZ"."""
    if s in (None, "now"):
        return int(time.time())
    if s.isdigit():
        return int(s)
    t = datetime.datetime.strptime(mf.check_expires(s), "%Y-%m-%dT%H:%M:%SZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp())


def stages(spec: str, start: int) -> dict:
    """A plan from "PERCENT@OFFSET,..." (e.g. "1@0,5@24h,25@48h,100@72h"), offsets from start."""
    out = []
    for item in spec.split(","):
        pct, at, off = item.partition("@")
        if not at:
            raise ValueError(f"a stage is PERCENT@OFFSET (e.g. 5@24h), not {item!r}")
        out.append([percent_bp(pct), start + duration(off)])
    if [s[1] for s in out] != sorted(s[1] for s in out):
        raise ValueError(f"stages must be in time order: {spec!r}")
    return {"stages": out}


def ramp(spec: str, start: int) -> dict:
    """A linear plan from "START_PERCENT:DURATION" (e.g. "1:72h"): start_bp at start, all of the
    fleet at start + duration."""
    pct, colon, dur = spec.partition(":")
    if not colon:
        raise ValueError(f"a ramp is START_PERCENT:DURATION (e.g. 1:72h), not {spec!r}")
    return {"start": start, "start_bp": percent_bp(pct), "duration": duration(dur)}


def percent_now(rollout: dict | None, t: float) -> float:
    """The share of the fleet (percent) the plan lets in at Unix time t (as the device computes
    it, python/ota/fleet.py basis_points())."""
    if not rollout:
        return 100.0
    if "stages" in rollout:
        bp = 0
        for b, st in rollout["stages"]:
            if t >= st:
                bp = b
        return bp / 100
    if t < rollout["start"]:
        return 0.0
    if t >= rollout["start"] + rollout["duration"]:
        return 100.0
    b0 = rollout.get("start_bp", 0)
    return (b0 + (FULL - b0) * int(t - rollout["start"]) // rollout["duration"]) / 100


# -- where a release goes: a directory or an S3-compatible bucket ------------------------------


class DirStore:
    """A directory a web server serves."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.where = str(self.root)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def write(self, key: str, data: bytes, content_type: str, cache: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.stat().st_mtime_ns if path.exists() else 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            # A server's ETag and Last-Modified are its mtime (seconds) and size: a later one.
            t = max(time.time_ns(), old + 1_000_000_000)
            os.utime(tmp, ns=(t, t))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class S3Store:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through boto3. `url` is
    s3://BUCKET[/PREFIX]; endpoint_url the service's (None: AWS); credentials as boto3 finds
    them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, ...); acl: a canned ACL for each
    object ("public-read" where the bucket uses ACLs; None: the bucket's policy decides)."""

    def __init__(self, url: str, endpoint_url: str | None = None, acl: str | None = None):
        m = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*?))?/?", url)
        if not m:
            raise ValueError(f"not an S3 URL: {url!r} (s3://BUCKET or s3://BUCKET/PREFIX)")
        self.bucket, self.prefix = m.group(1), (m.group(2) + "/" if m.group(2) else "")
        self.where = url
        self.acl = acl
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except Exception as e:  # botocore's ClientError 404
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise

    def write(self, key: str, data: bytes, content_type: str, cache: str) -> None:
        extra = {"ACL": self.acl} if self.acl else {}
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentType=content_type,
            CacheControl=cache,
            **extra,
        )


def store(where: str, endpoint_url: str | None = None, acl: str | None = None):
    return S3Store(where, endpoint_url, acl) if where.startswith("s3://") else DirStore(where)


def check_channel(name: str) -> str:
    if not CHANNEL.fullmatch(name or ""):
        raise ValueError(f"a channel name is 1-32 of a-z, 0-9, _ and -, not {name!r}")
    return name


def current(st, channel: str) -> dict | None:
    """The channel's manifest, or None."""
    raw = st.read(f"{check_channel(channel)}/manifest.json")
    return json.loads(raw) if raw else None


def next_sequence(old: dict | None) -> int:
    """Above the channel's last, and at least the time in seconds: a device moving to another
    channel finds its sequences above those it installed from the one it left (most often)."""
    last = old.get("sequence", -1) if old else -1
    return max(last + 1, int(time.time()))


def write_manifest(st, channel: str, m: dict, key_pem: bytes) -> dict:
    """Sign m and make it the channel's manifest."""
    signed = mf.sign(m, key_pem)
    data = (json.dumps(signed) + "\n").encode()
    st.write(f"{channel}/manifest.json", data, "application/json", MANIFEST_CACHE)
    return signed


def change(st, channel: str, key_pem: bytes, **fields) -> dict:
    """Rewrite the channel's manifest with `fields` changed (halted=True, a new rollout...) and
    the sequence + 1 (the controller's halt and resume)."""
    m = current(st, channel)
    if m is None:
        raise ValueError(f"no release on channel {channel!r} in {st.where}")
    if not mf.verify(m, _public(key_pem)):
        raise ValueError(f"{st.where}: the {channel} manifest is not signed by this key")
    m.update(fields)
    m["sequence"] = m["sequence"] + 1
    return write_manifest(st, channel, m, key_pem)


def _public(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def publish(
    image: str | Path,
    st,
    channel: str,
    key_pem: bytes,
    rollout: dict | None,
    version: str | None = None,
    sources: list | tuple = (),
    compression: str | None = None,
    expires: str | None = None,
) -> dict:
    """Publish `image` as the channel's release: its files by content, then the signed manifest.
    Returns the manifest."""
    check_channel(channel)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "image.bin"
        shutil.copyfile(image, src)
        m = mf.make(src, tmp, compression, None, version, expires, None, sources)
        served = [("firmware", m["firmware"])]
        for e in m.get("patches", []):
            served.append((e, e["file"]))
        for where, name in served:
            data = (Path(tmp) / name).read_bytes()
            ext = ".bin" if name == "image.bin" else "." + name.rsplit(".", 1)[1]
            key = f"files/{hashlib.sha256(data).hexdigest()}{ext}"
            if not st.exists(key):
                st.write(key, data, "application/octet-stream", FILE_CACHE)
            if where == "firmware":
                m["firmware"] = "../" + key
            else:
                where["file"] = "../" + key
    old = current(st, channel)
    m.update(
        manifest=mf.FORM,
        channel=channel,
        release=f"{m['version']}+{m['build'][:8]}",
        sequence=next_sequence(old),
        halted=False,
    )
    if rollout:
        m["rollout"] = rollout
    return write_manifest(st, channel, m, key_pem)


def describe(m: dict, t: float | None = None) -> str:
    t = time.time() if t is None else t
    plan = m.get("rollout")
    if plan and "stages" in plan:
        steps = ", ".join(
            f"{b / 100:g} % {'from' if s > t else 'since'} "
            f"{datetime.datetime.fromtimestamp(s, datetime.timezone.utc):%Y-%m-%d %H:%M}"
            for b, s in plan["stages"]
        )
    elif plan:
        steps = f"{plan['start_bp'] / 100:g} % -> 100 % over {plan['duration']} s"
    else:
        steps = "everyone"
    return (
        f"{m['channel']}: release {m['release']}, sequence {m['sequence']}, "
        f"{'HALTED' if m.get('halted') else 'live'}, {percent_now(plan, t):g} % of the fleet now "
        f"(plan: {steps})"
    )


NGINX_CONF = """\
# nginx serving a release directory (mpota release nginx): in the foreground, one process, its
# files under the folder given as nginx -p (the prefix).
daemon off;
master_process off;
pid nginx.pid;
error_log stderr;
events {{ worker_connections 256; }}
http {{
    log_format fleet '$connection $connection_requests "$request" "$http_range" $status '
                     '$bytes_sent $request_length';
    access_log {log} fleet;
    client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp;
    uwsgi_temp_path tmp; scgi_temp_path tmp;
    server_tokens off;                  # fewer bytes in every answer
    types {{ application/json json; }}
    default_type application/octet-stream;
    keepalive_timeout 30s;
    server {{
        listen {bind}:{port};
        root {root};
        location ~ /manifest\\.json$ {{ add_header Cache-Control "{manifest_cache}"; }}
        location /files/ {{ add_header Cache-Control "{file_cache}"; }}
    }}
}}
"""


def nginx_conf(root: str | Path, port: int, bind: str = "127.0.0.1", log: str = "access.log"):
    """nginx's configuration for serving the release directory `root` (Range, ETag and 304, keep-
    alive are nginx's own for static files): run `nginx -p PREFIX -c FILE -e stderr`."""
    return NGINX_CONF.format(
        root=Path(root).resolve(),
        port=port,
        bind=bind,
        log=log,
        manifest_cache=MANIFEST_CACHE,
        file_cache=FILE_CACHE,
    )


# -- the command line (mpota release ...) -----------------------------------------------------


def arguments(p) -> None:
    """The `mpota release` subcommands, on the argparse parser p."""
    sub = p.add_subparsers(dest="release", required=True)
    s = sub.add_parser("publish", help="publish an image as a channel's release")
    s.add_argument("image", help="the app image to release (as `mpota manifest` takes it)")
    s.add_argument("where", help="a directory a web server serves, or s3://BUCKET[/PREFIX]")
    s.add_argument("--channel", default="stable", help="stable, beta, ... (default stable)")
    s.add_argument("--key", required=True, help="the private key that signs the manifest")
    s.add_argument(
        "--version",
        type=_arg(mf.check_version),
        help="the release's version, e.g. 2.3.1 (default: the image's own)",
    )
    s.add_argument(
        "--from",
        dest="sources",
        action="append",
        metavar="OLD.bin",
        help="also publish a patch from this older image (repeat for several)",
    )
    s.add_argument(
        "--compress", choices=["zlib", "gzip", "mpz"], help="serve the image compressed"
    )
    s.add_argument(
        "--expires",
        type=_arg(mf.check_expires),
        help="UTC time (YYYY-MM-DDTHH:MM:SSZ) from which devices refuse this manifest",
    )
    s.add_argument(
        "--start", help="Unix time or YYYY-MM-DDTHH:MM:SSZ the plan starts at (default now)"
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--stages",
        default=DEFAULT_STAGES,
        help=f"PERCENT@OFFSET,... from --start (default {DEFAULT_STAGES})",
    )
    g.add_argument("--ramp", help="START_PERCENT:DURATION, linear to 100 %% (e.g. 1:72h)")
    s.add_argument("--endpoint-url", help="the S3-compatible service's URL (default AWS)")
    s.add_argument("--acl", help="S3: a canned ACL for the objects, e.g. public-read")
    s.set_defaults(release_fn=_cmd_publish)

    s = sub.add_parser("show", help="the release, plan and state of each channel")
    s.add_argument("where", help="the release directory, or s3://BUCKET[/PREFIX]")
    s.add_argument("--endpoint-url", help="the S3-compatible service's URL (default AWS)")
    s.set_defaults(release_fn=_cmd_show)

    s = sub.add_parser("nginx", help="an nginx configuration that serves a release directory")
    s.add_argument("root", help="the release directory nginx serves")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    s.set_defaults(release_fn=_cmd_nginx)


def _arg(check):
    import argparse

    def f(s):
        try:
            return check(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return f


def run(a) -> int:
    import sys

    try:
        return a.release_fn(a)
    except (ValueError, OSError) as e:
        print(f"mpota release {a.release}: {e}", file=sys.stderr)
        return 2


def _cmd_publish(a) -> int:
    start = when(a.start)
    plan = ramp(a.ramp, start) if a.ramp else stages(a.stages, start)
    st = store(a.where, a.endpoint_url, a.acl)
    key = Path(a.key).read_bytes()
    m = publish(a.image, st, a.channel, key, plan, a.version, a.sources, a.compress, a.expires)
    print(f"{st.where}/{a.channel}/manifest.json: {describe(m)}")
    print(f"  {m['firmware'][3:]}: {m.get('compressed_length', m['length'])} bytes")
    for p in m.get("patches", []):
        print(f"  {p['file'][3:]}: patch from build {p['build'][:8]}, {p['length']} bytes")
    return 0


def _cmd_show(a) -> int:
    st = store(a.where, a.endpoint_url)
    if isinstance(st, DirStore):
        names = sorted(p.parent.name for p in st.root.glob("*/manifest.json"))
    else:
        r = st.s3.list_objects_v2(Bucket=st.bucket, Prefix=st.prefix)
        keys = [o["Key"][len(st.prefix) :] for o in r.get("Contents", [])]
        names = sorted(k.split("/")[0] for k in keys if k.endswith("/manifest.json"))
    if not names:
        print(f"{st.where}: no channel")
        return 1
    for ch in names:
        print(describe(current(st, ch)))
    return 0


def _cmd_nginx(a) -> int:
    print(nginx_conf(a.root, a.port, a.bind), end="")
    return 0

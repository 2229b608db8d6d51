"""OTA manifests on the PC: make one from a firmware image (read with esptool and esp-idf-defs),
compress the image, sign the manifest with an ECDSA P-256 key (cryptography), make keys.

The device checks signatures over the same canonical form (python/ota/manifest.py); the two
implementations are kept apart on purpose and tested against each other."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .files import Staged
from .inspect import banner, describe_image

# "mpz": raw deflate with checkpoints, resumable (host/mpota/delta.py, README "Delta updates")
COMPRESSIONS = {"zlib": ".zz", "gzip": ".gz", "mpz": ".mpz"}
FORM = 2  # the canonical form `sign` uses (the manifest's "manifest" field)
_KEY = re.compile(r"[a-z0-9_]+")


def _check_key(k) -> str:
    if not isinstance(k, str) or not _KEY.fullmatch(k):
        raise ValueError(f"manifest field name {k!r}: only a-z, 0-9 and _ are allowed")
    return k


def _encode(v) -> bytes:
    """Form 2's typed encoding: every value carries its type and, if variable, its length."""
    if v is None:
        return b"n"
    if isinstance(v, bool):
        return b"t" if v else b"f"
    if isinstance(v, int):
        return b"i" + str(v).encode() + b";"
    if isinstance(v, str):
        raw = v.encode("utf-8")
        return b"s" + str(len(raw)).encode() + b":" + raw
    if isinstance(v, list):
        return b"l" + str(len(v)).encode() + b":" + b"".join(_encode(x) for x in v)
    if isinstance(v, dict):
        items = sorted(v.items())
        body = b"".join(_encode(_check_key(k)) + _encode(x) for k, x in items)
        return b"d" + str(len(items)).encode() + b":" + body
    raise ValueError(
        f"manifest value {v!r}: a signed manifest holds strings, integers, true, false, null, "
        "lists and objects"
    )


def canonical(m: dict) -> bytes:
    """The bytes a manifest's signature covers. Form 2 ("manifest": 2): a header line, then the
    manifest without "signature" in a typed encoding (see python/ota/manifest.py and README).
    Form 1 (no "manifest" field, written by earlier versions): every field but "signature",
    sorted by name, one "name=value" line each; field names limited to a-z, 0-9 and _."""
    if "manifest" in m:
        if m["manifest"] != FORM or isinstance(m["manifest"], bool):
            raise ValueError(f"unknown manifest form {m['manifest']!r}")
        return b"mpota-manifest-2\n" + _encode({k: v for k, v in m.items() if k != "signature"})
    lines = [b"mpota-manifest-1\n"]
    for k in sorted(m):
        if k == "signature":
            continue
        v = m[k]
        if isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, int):
            s = str(v)
        elif isinstance(v, str) and "\n" not in v:
            s = v
        elif v is None:
            s = "null"
        else:
            raise ValueError(f"manifest field {k!r}: a signed manifest holds strings and numbers")
        lines.append(f"{_check_key(k)}={s}\n".encode())
    return b"".join(lines)


def check_expires(t: str) -> str:
    """The manifest's "expires": UTC as YYYY-MM-DDTHH:MM:SSZ (the only form the device reads)."""
    import datetime

    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t or ""):
        raise ValueError(f"expires must be UTC as YYYY-MM-DDTHH:MM:SSZ, not {t!r}")
    datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ")  # a real date and time
    return t


_VERSION = re.compile(r"v?\d+(\.\d+)*([-+.][0-9A-Za-z.+-]*)?")
_HASH = re.compile(r"[0-9a-f]{7,40}(-dirty)?")


def check_version(v: str) -> str:
    """A release version the device can order: a dotted number first ("2.3.1", "v1.28.0",
    "1.2-rc1"), at most 64 characters; never a bare git hash (7 to 40 hex digits, which
    `git describe --always` prints where no tag is reachable)."""
    if _HASH.fullmatch(v or ""):
        raise ValueError(f"version {v!r} is a git hash, not a version: devices cannot order it")
    if not _VERSION.fullmatch(v or "") or len(v) > 64:
        raise ValueError(
            f"version must start with a dotted number, as 2.3.1 or v1.28.0 do, not {v!r}"
        )
    return v


def check_url(url: str) -> str:
    """The manifest's "firmware": an http:// or https:// URL with a host, or a reference
    relative to the manifest's own URL (no scheme), as the device reads it (python/ota/http.py).
    """
    if not isinstance(url, str) or not url or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(f"URL {url!r}: empty, or with spaces or control characters")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    if m and m.group(1).lower() not in ("http", "https"):
        raise ValueError(f"URL {url!r}: devices download over http:// or https:// only")
    if m and not re.match(r"https?://[^/?#:]+", url, re.I):
        raise ValueError(f"URL {url!r}: no host")
    return url


def load_private_key(pem: bytes, name: str = "the key"):
    """An ECDSA P-256 private key from PEM, or ValueError naming `name`."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError(f"{name} is encrypted: give an unencrypted PEM private key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{name} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{name} is not an ECDSA P-256 (secp256r1) private key")
    return key


def check_sequence(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sequence must be an integer >= 0, not {n!r}")
    return n


def make(
    image: str | Path,
    out_dir: str | Path | None = None,
    compression: str | None = None,
    url: str | None = None,
    version: str | None = None,
    expires: str | None = None,
    sequence: int | None = None,
    sources: list | tuple = (),
    interval: int | None = None,
    out: Staged | None = None,
) -> dict:
    """A manifest for `image` (its version: `version`, a release version of the user's own, else
    the image's own: the app description's, else MicroPython's banner; "micropython" is
    MicroPython's version from the banner, "build" the image's app_elf_sha256); `expires` (UTC,
    YYYY-MM-DDTHH:MM:SSZ) and `sequence` (an integer that grows with each release) guard
    against replay; with `compression` ("zlib", "gzip" or "mpz") the compressed file is written
    next to it (or in out_dir) and the manifest names it. sha and length always describe the
    image itself, compressed_sha and compressed_length the file served. `sources`: old images;
    for each, an MPZ1 patch (delta.py) from it to `image` is written beside the image and
    listed in "patches" with the old image's build id, length and SHA-256. `interval`: output
    bytes between the checkpoints of MPZ1 files (64 KB). `out`: the files.Staged the files go
    to (the caller commits it); without it they are written when all of them are ready, and
    none is when any step fails."""
    if out is None:
        with Staged() as staged:
            return make(
                image, out_dir, compression, url, version, expires, sequence, sources, interval,
                staged,
            )  # fmt: skip
    image = Path(image)
    m = describe_image(image)
    if version is not None:
        # A release version of the user's own: MicroPython's stays, as information and for the
        # device to check the image's banner against (python/ota/policy.py).
        mp = banner(image.read_bytes())
        if mp and mp[0] != check_version(version):
            m["micropython"] = mp[0]
        m["version"] = version
    if expires is not None:
        m["expires"] = check_expires(expires)
    if sequence is not None:
        m["sequence"] = check_sequence(sequence)
    if url is not None:
        check_url(url)
    where = Path(out_dir) if out_dir else image.parent
    if not where.is_dir():
        raise FileNotFoundError(2, "no such directory", str(where))
    name = image.name
    if compression:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        data = image.read_bytes()
        if compression == "mpz":
            from . import delta

            packed = delta.image_transport(data, interval or delta.INTERVAL)
            hl = delta.parse_header(packed)["header_length"]
            m.update(header_length=hl, header_sha=hashlib.sha256(packed[:hl]).hexdigest())
        elif compression == "zlib":
            packed = zlib.compress(data, 9)
        else:
            packed = gzip.compress(data, 9, mtime=0)
        name = image.name + COMPRESSIONS[compression]
        out.write(where / name, packed)
        m.update(
            compression=compression,
            compressed_sha=hashlib.sha256(packed).hexdigest(),
            compressed_length=len(packed),
        )
    m["firmware"] = url or name
    if sources:
        from . import delta

        m["manifest"] = FORM  # lists and objects need canonical form 2
        m["patches"] = []
        for src in sources:
            build = describe_image(src)["build"]
            if build == m["build"]:
                raise ValueError(f"{src} is the same build as {image}: no patch needed")
            name = f"{image.name}.from-{build[:8]}.mpz"
            entry = delta.write_patch(
                src, image, where, name, interval or delta.INTERVAL, out.write
            )
            m["patches"].append(entry)
    return m


def keygen(private_path: str | Path, public_path: str | Path) -> None:
    """A new key pair, written to both files or to neither; the private key readable by its
    owner only (folders made as needed)."""
    if Path(private_path).resolve() == Path(public_path).resolve():
        raise ValueError(f"{private_path}: the private and public keys need two files")
    key = ec.generate_private_key(ec.SECP256R1())
    for path in (private_path, public_path):
        if Path(path).is_dir():
            raise IsADirectoryError(21, "is a directory", str(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Staged() as out:
        out.write(
            private_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            mode=0o600,
        )
        out.write(
            public_path,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


def sign(m: dict, private_key) -> dict:
    """`m` signed with `private_key`: PEM bytes, or a key from load_private_key()."""
    key = private_key
    if isinstance(key, bytes | str):
        key = load_private_key(key.encode() if isinstance(key, str) else key, "the signing key")
    signed = dict(m)
    signed.pop("signature", None)
    signed.setdefault("manifest", FORM)
    sig = key.sign(canonical(signed), ec.ECDSA(hashes.SHA256()))
    signed["signature"] = base64.b64encode(sig).decode()
    return signed


def verify(m: dict, public_pem: bytes) -> bool:
    key = serialization.load_pem_public_key(public_pem)
    try:
        key.verify(
            base64.b64decode(m.get("signature", "")), canonical(m), ec.ECDSA(hashes.SHA256())
        )
        return True
    except (InvalidSignature, ValueError):
        return False


def dump(m: dict, path: str | Path, out: Staged | None = None) -> None:
    """Write the manifest (whole or not at all; into `out` if given)."""
    text = json.dumps(m, indent=2) + "\n"
    if out is not None:
        out.write(path, text)
    else:
        with Staged() as staged:
            staged.write(path, text)

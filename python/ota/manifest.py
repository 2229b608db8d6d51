# OTA manifests: load() reads one (bounded), check() verifies its signature. A manifest is
# {"firmware", "sha", "length"} (the original project's), optionally "version", "chip",
# "project", "compression", "compressed_sha", "compressed_length" and "signature".
# A signature is ECDSA P-256 over SHA-256 of the manifest's canonical form, base64 of its DER
# encoding. mpota sign makes it on the PC; verification uses the native module's mbedtls when
# the firmware has it.
#
# Canonical form 2 (a manifest with "manifest": 2): "mpota-manifest-2\n", then the manifest
# without "signature" as a typed value: n (null), t / f (true / false), i<decimal>; (integer),
# s<byte length>:<UTF-8> (string), l<count>:<values> (list), d<count>:<key value ...> (object:
# keys sorted, each a string of a-z, 0-9 and _). Every value says its type and length, so no two
# manifests share a form. Form 1 (no "manifest" field, from earlier tools) is "mpota-manifest-1\n"
# and one "key=value" line per field; it is still accepted, with the same key rule, so that a
# key holding "=" or a newline cannot pass for two fields.

import binascii
import hashlib

_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
FORM = 2


def _key(k):
    if not isinstance(k, str) or not k or [c for c in k if c not in _KEY_CHARS]:
        raise ValueError("manifest field name %r: only a-z, 0-9 and _ are allowed" % (k,))
    return k


def _typed(v, out):
    if v is None:
        out.append(b"n")
    elif v is True or v is False:
        out.append(b"t" if v else b"f")
    elif isinstance(v, int):
        out.append(("i%d;" % v).encode())
    elif isinstance(v, str):
        b = v.encode()
        out.append(("s%d:" % len(b)).encode())
        out.append(b)
    elif isinstance(v, list):
        out.append(("l%d:" % len(v)).encode())
        for x in v:
            _typed(x, out)
    elif isinstance(v, dict):
        out.append(("d%d:" % len(v)).encode())
        for k in sorted(v):
            _typed(_key(k), out)
            _typed(v[k], out)
    else:
        raise ValueError(
            "manifest value %r: a signed manifest holds strings, integers, true, false, null, "
            "lists and objects" % (v,)
        )


def _form1(m):
    out = [b"mpota-manifest-1\n"]
    for k in sorted(m):
        if k == "signature":
            continue
        v = m[k]
        if isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, int):
            s = "%d" % v
        elif isinstance(v, str) and "\n" not in v:
            s = v
        elif v is None:
            s = "null"
        else:
            raise ValueError("manifest field %r: a signed manifest holds strings and numbers" % k)
        out.append(("%s=%s\n" % (_key(k), s)).encode())
    return b"".join(out)


# The bytes a signature covers.
def canonical(m):
    if "manifest" not in m:
        return _form1(m)
    form = m["manifest"]
    if form != FORM or isinstance(form, bool):
        raise ValueError("The manifest is in form %r, which this device does not know." % (form,))
    out = [b"mpota-manifest-2\n"]
    _typed({k: m[k] for k in m if k != "signature"}, out)
    return b"".join(out)


# A public key as DER (SubjectPublicKeyInfo), from PEM text or DER bytes.
def key_der(key):
    if isinstance(key, str):
        key = key.encode()
    key = bytes(key)
    if key.startswith(b"-----BEGIN"):
        body = b"".join(line for line in key.split(b"\n") if line and not line.startswith(b"-"))
        key = binascii.a2b_base64(body)
    return key


def _verify(der, digest, sig):
    try:
        import _ota

        return _ota.verify_signature(der, digest, sig)
    except (ImportError, AttributeError):
        from . import _ecdsa

        return _ecdsa.verify(der, digest, sig)


# Raise ValueError unless manifest m carries a valid signature by key.
def check(m, key):
    sig = m.get("signature")
    if not sig:
        raise ValueError("The manifest is not signed, and a public key is configured: refused.")
    try:
        sig = binascii.a2b_base64(sig)
    except ValueError:
        raise ValueError("The manifest's signature is not base64: refused.")
    digest = hashlib.sha256(canonical(m)).digest()
    if not _verify(key_der(key), digest, sig):
        raise ValueError("The manifest's signature does not match the public key: refused.")


# A manifest is small: one that is larger than this is refused without reading it whole.
_MAX_JSON = 16384


def _not_json(url, head):
    hint = " (an ESP32 app image? from_file() takes those)" if head[:1] == b"\xe9" else ""
    return ValueError(
        "The manifest at %s is not a JSON object: it starts with %r%s." % (url, head[:16], hint)
    )


# Read at most _MAX_JSON bytes of a manifest (a URL or a file) and parse it. The first bytes must
# open a JSON object, and a Content-Length (or file size) above the limit is refused before the
# body is read.
def load(url, ca=None, timeout=30, headers=None, auth=None, deadline=None):
    if "://" in url:
        from . import http

        f = http.get(url, 0, ca, timeout, headers, auth, deadline)
        size = f.length
    else:
        f = open(url, "rb")
        import os

        size = os.stat(url)[6]
    try:
        return read(f, size, url)
    finally:
        f.close()


# The JSON object in the stream f (size: its announced length, -1 unknown), bounded as load()
# says; url names it in errors.
def read(f, size, url):
    big = "The manifest at %s is larger than %d bytes: refused (a manifest is a small JSON file)."
    if size > _MAX_JSON:
        raise ValueError(big % (url, _MAX_JSON))
    buf = bytearray(_MAX_JSON + 1)
    mv = memoryview(buf)
    got = 0
    checked = False
    while got < len(buf):
        n = f.readinto(mv[got:])
        if not n:
            break
        got += n
        if not checked:
            head = bytes(mv[:got]).lstrip()
            if head[:1] not in (b"", b"{"):
                raise _not_json(url, head)
            checked = bool(head)
    if got > _MAX_JSON:
        raise ValueError(big % (url, _MAX_JSON))
    if not checked:
        raise ValueError("The manifest at %s is empty." % url)
    try:
        import json

        return json.loads(bytes(mv[:got]))
    except ValueError:
        raise ValueError("The manifest at %s is not valid JSON." % url)

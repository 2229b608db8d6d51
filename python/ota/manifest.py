# OTA manifests: {"firmware", "sha", "length"} (the original project's), optionally "version",
# "chip", "project", "compression", "compressed_sha", "compressed_length" and "signature".
# A signature is ECDSA P-256 over SHA-256 of the manifest's canonical form (every field but
# "signature", sorted, one "key=value" line each), base64 of its DER encoding. mpota sign makes
# it on the PC; verification uses the native module's mbedtls when the firmware has it.

import binascii
import hashlib

_HEADER = b"mpota-manifest-1\n"


def canonical(m):
    out = [_HEADER]
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
        out.append(("%s=%s\n" % (k, s)).encode())
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

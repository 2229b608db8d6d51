"""Manifest signatures: the device's canonical form equals the PC's; ECDSA P-256 verification
on the device (pure Python, and mbedtls in the native module) agrees with `cryptography` on
valid signatures, altered messages, other keys, malformed signatures and keys."""

import base64
import hashlib
import json
import random

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from mpota import manifest

MANIFESTS = [
    {"firmware": "micropython.bin", "sha": "ab" * 32, "length": 1525536},
    {
        "firmware": "fw.bin.zz",
        "sha": "00" * 32,
        "length": 1,
        "version": "v1.24.0-preview.1.g1",
        "chip": "esp32",
        "compression": "zlib",
        "compressed_length": 7,
        "signature": "xx",
        "compressed_sha": "ff" * 32,
        "flag": True,
        "none": None,
        "zero": 0,
    },
]


def _cases():
    rng = random.Random(7)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    out = []
    for i in range(12):
        key = keys[i % 3]
        msg = rng.randbytes(rng.randrange(1, 200))
        sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        pub = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.sha256(msg).digest()
        out.append((pub, digest, sig, True))
        out.append((pub, hashlib.sha256(msg + b"!").digest(), sig, False))  # altered message
        other = (
            keys[(i + 1) % 3]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        out.append((other, digest, sig, False))  # another key
    pub, digest, sig, _ = out[0]
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    out += [
        (pub, digest, sig[:-1], False),  # truncated DER
        (pub, digest, b"\x30\x06\x02\x01\x01\x02\x01\x01", False),  # r = s = 1
        (pub, digest, encode_dss_signature(n, 1), False),  # r out of range
        (pub, digest, encode_dss_signature(0, 5), False),
        (pub, digest, b"", False),
    ]
    return out


CASES = _cases()


def test_canonical_form_is_the_same_on_device_and_pc(sim):
    r = sim.run(f"""
from ota import manifest
import binascii
for m in {MANIFESTS!r}:
    print(binascii.hexlify(manifest.canonical(m)).decode())
""")
    assert r.stdout.split() == [manifest.canonical(m).hex() for m in MANIFESTS]


def test_device_verification_agrees_with_cryptography(sim):
    r = sim.run(f"""
from ota import _ecdsa
cases = {CASES!r}
print([_ecdsa.verify(k, d, s) for k, d, s, _ in cases])
try:
    import _ota
    print([_ota.verify_signature(k, d, s) for k, d, s, _ in cases])
except ImportError:
    print("no native")
""")
    lines = r.stdout.splitlines()
    want = [ok for *_, ok in CASES]
    assert eval(lines[0]) == want
    if sim.backend == "native":
        assert eval(lines[1]) == want
    else:
        assert lines[1] == "no native"


@pytest.mark.parametrize("key", [b"\x04" + bytes(64), b"not a key at all", b""])
def test_bad_keys_are_refused_clearly(sim, key):
    pub, digest, sig, _ = CASES[0]
    r = sim.run(f"""
from ota import _ecdsa
for verify in [_ecdsa.verify] + ([__import__("_ota").verify_signature]
                                 if {sim.backend == "native"!r} else []):
    try:
        verify({key!r}, {digest!r}, {sig!r})
        print("accepted")
    except ValueError as e:
        print("ValueError", e)
""")
    lines = r.stdout.splitlines()
    assert lines and all(line.startswith("ValueError public key") for line in lines), r.stdout


def test_manifest_check_uses_the_configured_key(sim, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed = manifest.sign(MANIFESTS[0], pem)
    assert manifest.verify(signed, pub)
    tampered = dict(signed, length=signed["length"] + 1)
    assert not manifest.verify(tampered, pub)
    r = sim.run(f"""
from ota import manifest
for m in ({json.dumps(signed)}, {json.dumps(tampered)}, {json.dumps(MANIFESTS[0])}):
    try:
        manifest.check(m, {pub.decode()!r})
        print("valid")
    except ValueError as e:
        print(e)
""")
    assert r.stdout.splitlines() == [
        "valid",
        "The manifest's signature does not match the public key: refused.",
        "The manifest is not signed, and a public key is configured: refused.",
    ]
    assert base64.b64decode(signed["signature"])[0] == 0x30  # DER

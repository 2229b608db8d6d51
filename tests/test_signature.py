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


def _fuzz_cases(n=300):
    """Malformed signatures and keys, from one valid (key, digest, signature): byte flips,
    truncations and extensions, DER length and integer-encoding tricks, r or s out of range,
    and keys with the wrong prefix, a point off the curve, a compressed point, extra bytes."""
    rng = random.Random(2026)
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    comp = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    msg = b"mpota-manifest-2\n"
    sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(msg).digest()
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(sig)
    n_ = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

    def der_int(v, pad=0):
        b = v.to_bytes((v.bit_length() + 8) // 8 or 1, "big", signed=False)
        b = b"\x00" * pad + b
        return b"\x02" + bytes([len(b)]) + b

    def der_sig(a, b, extra=b""):
        body = a + b
        return b"\x30" + bytes([len(body)]) + body + extra

    cases = [(pub, digest, sig)]
    sigs = [
        der_sig(der_int(r, 1), der_int(s)),  # non-minimal integer
        der_sig(der_int(r), der_int(s), b"\x00"),  # trailing byte
        der_sig(der_int(r), der_int(n_ - s)),  # high S (valid ECDSA, malleable)
        der_sig(der_int(r + n_), der_int(s)),  # r >= n
        der_sig(der_int(0), der_int(s)),
        der_sig(der_int(r), der_int(0)),
        b"\x30\x81" + bytes([len(sig) - 2]) + sig[2:],  # long-form length
        b"\x02" + sig[1:],  # not a SEQUENCE
        sig[:2] + b"\x02\x00" + sig[2:],  # empty INTEGER first
        der_sig(b"\x02\x20" + r.to_bytes(32, "big"), der_int(s)),  # no sign byte
        der_sig(der_int(r, 2), der_int(s, 3)),  # 34 and more bytes, zero-padded
        der_sig(b"\x02\x81" + bytes([len(der_int(r)) - 2]) + der_int(r)[2:], der_int(s)),
    ]
    cases += [(pub, digest, x) for x in sigs]
    keys = [
        pub[:-1],
        pub + b"\x00",
        pub[:26] + b"\x05" + pub[27:],  # point format byte 5
        pub[:-1] + bytes([pub[-1] ^ 1]),  # off the curve
        pub[:23] + bytes([len(comp) + 1]) + b"\x00" + comp,  # compressed point, as is
        b"\x30" + pub[1:20] + b"\x07" + pub[21:],  # a different OID byte
    ]
    cases += [(k, digest, sig) for k in keys]
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:  # flip a byte of the signature
            b = bytearray(sig)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            cases.append((pub, digest, bytes(b)))
        elif kind == 1:  # cut or extend the signature
            cut = rng.randrange(len(sig) + 8)
            cases.append((pub, digest, (sig + rng.randbytes(8))[:cut]))
        elif kind == 2:  # flip a byte of the key
            b = bytearray(pub)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            cases.append((bytes(b), digest, sig))
        else:  # random bytes in the DER shape
            body = rng.randbytes(rng.randrange(0, 80))
            cases.append((pub, digest, b"\x30" + bytes([len(body)]) + body))
    return cases


FUZZ = """
import binascii, json
from ota import _ecdsa
import _ota
def run(f, k, d, s):
    try:
        return bool(f(k, d, s))
    except ValueError:
        return "ValueError"
cases = [[binascii.unhexlify(x) for x in c] for c in json.load(open("cases.json"))]
print(json.dumps([run(_ecdsa.verify, k, d, s) for k, d, s in cases]))
print(json.dumps([run(_ota.verify_signature, k, d, s) for k, d, s in cases]))
"""


def test_pure_and_mbedtls_verifiers_agree_on_every_input(tmp_path, native_lib):
    # A differential fuzz: the pure-Python verifier (stock firmware) and mbedtls (the native
    # module) must give the same answer, accept or refuse, for every malformed input.
    from conftest import image
    from mpota import simdev

    cases = _fuzz_cases()
    (tmp_path / "cases.json").write_text(json.dumps([[x.hex() for x in c] for c in cases]))
    simdev.create(tmp_path / "flash.bin", image("v1.22.0", 300_032))
    r = simdev.run(tmp_path / "flash.bin", FUZZ, "cpython-native", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    pure, native = (json.loads(line) for line in r.stdout.splitlines()[-2:])
    assert len(pure) == len(native) == len(cases)
    differ = [(i, pure[i], native[i]) for i in range(len(cases)) if pure[i] != native[i]]
    assert not differ, differ[:10]
    assert pure[0] is True  # the genuine signature verifies
    assert pure.count(False) + pure.count("ValueError") > len(cases) // 2

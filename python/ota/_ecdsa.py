# ECDSA P-256 signature verification in pure Python, for firmware without the native module.
# Verifying touches no secret, so plain big-integer arithmetic is safe here.

import binascii

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
# DER SubjectPublicKeyInfo of a P-256 key, up to the 65-byte point
_SPKI = binascii.unhexlify("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def _inv(x, m):
    return pow(x, m - 2, m)


# Points in Jacobian coordinates (X, Y, Z); Z == 0 is the point at infinity.
def _double(p):
    x, y, z = p
    if z == 0 or y == 0:
        return (0, 1, 0)
    zz = z * z % _P
    m = 3 * (x - zz) * (x + zz) % _P  # a = -3
    yy = y * y % _P
    s = 4 * x * yy % _P
    x3 = (m * m - 2 * s) % _P
    return (x3, (m * (s - x3) - 8 * yy * yy) % _P, 2 * y * z % _P)


def _add(p, q):
    if p[2] == 0:
        return q
    if q[2] == 0:
        return p
    z1z1 = p[2] * p[2] % _P
    z2z2 = q[2] * q[2] % _P
    u1 = p[0] * z2z2 % _P
    u2 = q[0] * z1z1 % _P
    s1 = p[1] * q[2] * z2z2 % _P
    s2 = q[1] * p[2] * z1z1 % _P
    if u1 == u2:
        return _double(p) if s1 == s2 else (0, 1, 0)
    h = (u2 - u1) % _P
    r = (s2 - s1) % _P
    hh = h * h % _P
    hhh = h * hh % _P
    v = u1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    return (x3, (r * (v - x3) - s1 * hhh) % _P, h * p[2] * q[2] % _P)


def _on_curve(x, y):
    return 0 <= x < _P and 0 <= y < _P and (y * y - x * x * x - _A * x - _B) % _P == 0


# The 65-byte uncompressed point (0x04 || X || Y) from a P-256 SubjectPublicKeyInfo (DER), or
# the point itself.
def point(key):
    key = bytes(key)
    if len(key) == 91 and key[:26] == _SPKI:
        key = key[26:]
    if len(key) != 65 or key[0] != 4:
        raise ValueError("public key must be an ECDSA P-256 key (SubjectPublicKeyInfo)")
    x = int.from_bytes(key[1:33], "big")
    y = int.from_bytes(key[33:], "big")
    if not _on_curve(x, y):
        raise ValueError("public key is not a point of P-256")
    return x, y


# A DER length at b[i] (short form, or long form in 1 to 4 bytes): (length, index after it).
def _der_len(b, i):
    n = b[i]
    if n < 0x80:
        return n, i + 1
    k = n & 0x7F
    if k == 0 or k > 4:
        raise ValueError
    return int.from_bytes(b[i + 1 : i + 1 + k], "big"), i + 1 + k


def _der_int(b, i):
    if b[i] != 2:
        raise ValueError
    n, i = _der_len(b, i + 1)
    if n == 0 or i + n > len(b):
        raise ValueError
    return int.from_bytes(b[i : i + n], "big"), i + n


# (r, s) from an ECDSA-Sig-Value, or None if it is not one. Read as mbedtls reads it (the
# native module's verifier), so that both agree on every input: lengths in short or long form,
# integers as unsigned big-endian numbers of any length (the range check comes after).
def signature(sig):
    b = bytes(sig)
    try:
        if len(b) < 8 or b[0] != 0x30:
            return None
        n, i = _der_len(b, 1)
        if i + n != len(b):
            return None
        r, i = _der_int(b, i)
        s, i = _der_int(b, i)
        return (r, s) if i == len(b) else None
    except (ValueError, IndexError):
        return None


# True when sig (DER) is a valid ECDSA P-256 signature of the SHA-256 digest by key.
def verify(key, digest, sig):
    qx, qy = point(key)
    rs = signature(sig)
    if rs is None:
        return False
    r, s = rs
    if not (0 < r < _N and 0 < s < _N):
        return False
    e = int.from_bytes(bytes(digest), "big")
    w = _inv(s, _N)
    u1 = e * w % _N
    u2 = r * w % _N
    # u1*G + u2*Q with one pass over the bits (Shamir's trick)
    g = (_G[0], _G[1], 1)
    q = (qx, qy, 1)
    gq = _add(g, q)
    acc = (0, 1, 0)
    for bit in range(256, -1, -1):
        acc = _double(acc)
        a, b = (u1 >> bit) & 1, (u2 >> bit) & 1
        if a and b:
            acc = _add(acc, gq)
        elif a:
            acc = _add(acc, g)
        elif b:
            acc = _add(acc, q)
    if acc[2] == 0:
        return False
    zi = _inv(acc[2], _P)
    x = acc[0] * zi * zi % _P
    return x % _N == r

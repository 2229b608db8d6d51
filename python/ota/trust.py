# ota.trust: whether from_json() may act on a manifest, decided before the image is requested.
#
# The key: pubkey= (PEM text or bytes, or DER bytes), else the file PUBKEY at the filesystem's
# root ("/ota_pubkey.pem" on a board; ota/state.py says where in the simulator), whatever the
# current directory. A key that is configured but empty, unreadable or not an ECDSA P-256 public
# key refuses the update (fail closed); no key at all accepts unsigned manifests, and says so.
#
# Signed manifests may also carry:
#   "expires":  "YYYY-MM-DDTHH:MM:SSZ" (UTC): refused from that second on. A device whose clock
#               is not set (before 2025: an ESP32 starts at 2000-01-01 after a reset until NTP
#               or machine.RTC sets it) refuses a manifest that expires: set the clock first
#               (ntptime.settime()).
#   "sequence": an integer >= 0 that grows with each release: refused unless above the highest
#               sequence this device installed (ota/history.py); once it has installed one, a
#               signed manifest without a sequence is refused too.
# force=True skips expiry, sequence and the rolled-back check; allow_downgrade=True the sequence.

import time

from . import history, state

PUBKEY = "ota_pubkey.pem"
_CLOCK_SET = 2025  # a clock before this year has not been set
_MAX_KEY = 4096


def _usable(der, where):
    from . import _ecdsa

    try:
        _ecdsa.point(der)
    except ValueError as e:
        raise ValueError("The public key %s is not usable (%s): refused." % (where, e))
    return der


def _der(text, where):
    from . import manifest

    if not text.strip():
        raise ValueError(
            "The public key %s is empty: refused (a configured key must be an ECDSA P-256 "
            "public key, PEM)." % where
        )
    try:
        der = manifest.key_der(text.strip())
    except ValueError:
        raise ValueError("The public key %s is not PEM or DER: refused." % where)
    return _usable(der, where)


# The configured public key as DER, or None when none is configured. ValueError when one is
# configured but cannot be used.
def key(pubkey=None):
    if pubkey is not None:
        if not isinstance(pubkey, (str, bytes, bytearray)):
            raise ValueError("pubkey must be PEM text or DER bytes, not %r" % (pubkey,))
        if not pubkey:
            raise ValueError(
                "pubkey='' is not a key: pass an ECDSA P-256 public key (PEM text or DER "
                "bytes), or leave pubkey=None to use %s." % state.path(PUBKEY)
            )
        b = pubkey.encode() if isinstance(pubkey, str) else bytes(pubkey)
        return _der(b, "given as pubkey=")
    import os

    p = state.path(PUBKEY)
    try:
        os.stat(p)
    except OSError as e:
        if e.args[0] == 2:  # ENOENT: no key configured
            return None
        raise ValueError("The public key file %s cannot be read (%s): refused." % (p, e))
    try:
        with open(p, "rb") as f:
            b = f.read(_MAX_KEY + 1)
    except OSError as e:
        raise ValueError("The public key file %s cannot be read (%s): refused." % (p, e))
    if len(b) > _MAX_KEY:
        raise ValueError("The public key file %s is larger than a key: refused." % p)
    return _der(b, "in " + p)


# (year, month, day, hour, minute, second) of "YYYY-MM-DDTHH:MM:SSZ", or ValueError.
def parse_time(s):
    ok = isinstance(s, str) and len(s) == 20 and s[19] == "Z" and s[10] == "T"
    if ok:
        ok = s[4] == s[7] == "-" and s[13] == s[16] == ":"
    if ok:
        parts = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
        ok = all(p.isdigit() for p in parts)
    if not ok:
        raise ValueError(
            'The manifest\'s "expires" must be UTC as "YYYY-MM-DDTHH:MM:SSZ", not %r' % (s,)
        )
    t = tuple(int(p) for p in parts)
    if not (1 <= t[1] <= 12 and 1 <= t[2] <= 31 and t[3] < 24 and t[4] < 60 and t[5] < 60):
        raise ValueError('The manifest\'s "expires" is not a date and time: %r' % (s,))
    return t


# The device's UTC time as (year, month, day, hour, minute, second).
def clock():
    return tuple(time.gmtime()[:6])


def _fmt(t):
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % t


def check_expiry(m):
    if "expires" not in m:
        return
    until = parse_time(m["expires"])
    now = clock()
    if now[0] < _CLOCK_SET:
        raise ValueError(
            "The manifest expires at %s, and this device's clock is not set (it says %s): "
            "refused. Set the clock first (ntptime.settime())." % (m["expires"], _fmt(now))
        )
    if now >= until:
        raise ValueError(
            "The manifest expired at %s (now %s): refused (an old manifest served again?)."
            % (m["expires"], _fmt(now))
        )


def sequence(m):
    seq = m.get("sequence")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise ValueError('The manifest\'s "sequence" must be an integer >= 0, not %r' % (seq,))
    return seq


def check_sequence(m, signed, hist):
    seq = sequence(m)
    last = hist["sequence"]
    if last is None:
        return
    if seq is None:
        if signed:
            raise ValueError(
                "The manifest has no sequence, and this device installed sequence %d: refused "
                "(an older manifest served again? allow_downgrade=True installs it)." % last
            )
        return
    if seq <= last:
        raise ValueError(
            "The manifest's sequence %d is not above %d, the highest this device installed: "
            "refused (an older manifest served again? allow_downgrade=True installs it)."
            % (seq, last)
        )


def rolled_back_message(build):
    return (
        "This device rolled back from build %s... (it was installed, booted and did not confirm "
        "itself): refused, so that it does not loop (force=True installs it again)." % build[:16]
    )


# The checks of a manifest, in order, with der the key() (None: none configured); returns the
# sequence to remember once the image is installed.
def check(m, der, allow_downgrade=False, force=False, verbose=True):
    from . import manifest

    if der:
        manifest.check(m, der)
        if verbose:
            print("Manifest signature: valid.")
    elif verbose:
        print(
            "Manifest signature: not checked: no public key (pubkey=, or %s): this manifest is "
            "installed unsigned." % state.path(PUBKEY)
        )
    seq = sequence(m)
    if force:
        return seq
    check_expiry(m)
    hist = history.notice()
    build = m.get("build")
    if isinstance(build, str) and build in hist["rolled_back"]:
        raise ValueError(rolled_back_message(build))
    if not allow_downgrade:
        check_sequence(m, bool(der), hist)
    return seq

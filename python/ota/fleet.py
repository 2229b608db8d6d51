# ota.fleet: staged rollouts decided on the device, from manifests on any static host (issue 18).
#
#   import ota.fleet
#   f = ota.fleet.Fleet("http://cdn.example.com/releases/", reporter=None)
#   f.run()           # poll <base>/<channel>/manifest.json for ever; install when eligible
#   f.check()         # one poll: "no_news"... see decide(); "installed" after an update
#   ota.fleet.set_channel("beta"), ota.fleet.pin("2.3.1+1a2b3c4d"), ota.fleet.pin(None)
#
# Selection, no server logic: the manifest (signed, `mpota release`) carries "release" (an id),
# "rollout" and "halted". bucket(device id, release) is a hash mod 10,000 (a different order of
# devices for every release); the device is eligible while its bucket is below the plan's basis
# points at the current time (a clock not set: the first stage's). A halted release is not
# started. A pin (kept on the device) installs that release only, whatever its stage.
#
# Polls: the first at a random point of the first 0.9 x interval after start (the shortest gap
# between two polls), then every interval +-10 %; after an error, capped exponential backoff
# with jitter. No device polls twice within 0.9 x interval, so a fleet of N devices, even all
# powered on at once, asks N / (0.9 x interval) = 1.11 x N / interval manifests a second at
# most, on average (a first poll anywhere in the interval would peak at 1.5 x N / interval at
# its end, where the second polls begin). Each poll is a conditional GET (If-None-Match /
# If-Modified-Since): no news costs one request answered 304, and the device decides again on
# the manifest it kept, as the plan's stages open with time.
# Penalty box: a release that failed on this device `tries` times is not tried for 24 h.
# The install is ota.update.from_json() (signature, expiry, sequence, patches, versions).
#
# State files (ota/state.py): "ota_fleet.json" {"channel", "pin", "failures": {release: [count,
# time of the last]}}, "ota_fleet_manifest.json" {"url", "etag", "modified", "m": manifest}.
#
# reporter (duck-typed, may be None): reporter.send(state, release=None, to_build=None,
# reason=None, progress=None) at each step (ota/report.py sends them over MQTT).

import time

from . import state

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


FILE = "ota_fleet.json"
CACHE = "ota_fleet_manifest.json"
CLOCK_SET = const(1735689600)  # 2025-01-01T00:00:00Z: a clock before this has not been set
PENALTY = const(86400)  # seconds a release stays in the penalty box
TRIES = const(3)  # failures of one release before the penalty box
_FULL = const(10000)  # basis points of the whole fleet
_KEEP = const(4)  # releases whose failures are remembered
_CACHE_LIMIT = const(20000)  # bytes of the kept manifest file
# time.time() counts from 2000-01-01 on the esp32 port, from 1970 on the unix port and CPython.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


def now():
    return time.time() + _EPOCH  # Unix time


def device_id():
    import binascii

    import machine

    return binascii.hexlify(machine.unique_id()).decode()


def bucket(device, release):
    import hashlib

    d = hashlib.sha256((device + "/" + release).encode()).digest()
    return int.from_bytes(d[:4], "big") % _FULL


def _int(v, what, lo=0, hi=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ValueError(
            "The manifest's rollout: %s must be an integer >= %d, not %r" % (what, lo, v)
        )
    return v


# Basis points of the fleet (of 10,000) the plan lets in at Unix time t. No plan: all of it.
def basis_points(rollout, t):
    if rollout is None:
        return _FULL
    if not isinstance(rollout, dict):
        raise ValueError("The manifest's rollout must be an object, not %r" % (rollout,))
    stages = rollout.get("stages")
    if stages is not None:
        if not isinstance(stages, list) or not stages:
            raise ValueError("The manifest's rollout stages must be a list of [bp, time]")
        bp = 0
        last = -1
        for s in stages:
            if not isinstance(s, list) or len(s) != 2:
                raise ValueError("The manifest's rollout stage %r is not [bp, time]" % (s,))
            b = _int(s[0], "a stage's basis points", 0, _FULL)
            st = _int(s[1], "a stage's start", last)
            last = st
            if t >= st:
                bp = b
        return stages[0][0] if t < CLOCK_SET else bp
    start = _int(rollout.get("start"), "start")
    b0 = _int(rollout.get("start_bp", 0), "start_bp", 0, _FULL)
    dur = _int(rollout.get("duration"), "duration")
    if t < CLOCK_SET:
        return b0
    if t < start:
        return 0
    if t >= start + dur:
        return _FULL
    return b0 + (_FULL - b0) * (t - start) // dur


# -- what the device keeps: channel, pin, failures --------------------------------------------


def settings():
    s = state.read(FILE) or {}
    ch = s.get("channel")
    pin = s.get("pin")
    f = s.get("failures")
    out = {"channel": ch if _name(ch) else "stable", "pin": pin if _release(pin) else None}
    out["failures"] = {}
    if isinstance(f, dict):
        for r in f:
            v = f[r]
            if _release(r) and isinstance(v, list) and len(v) == 2:
                if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                    out["failures"][r] = v
    return out


def _name(c):
    ok = isinstance(c, str) and 0 < len(c) <= 32
    return ok and not [x for x in c if x not in "abcdefghijklmnopqrstuvwxyz0123456789_-"]


def _release(r):
    return isinstance(r, str) and 0 < len(r) <= 64


def _save(s):
    state.write(FILE, s)


# Follow channel `name` (stable, beta, any a-z0-9_- name): the next poll reads its manifest.
def set_channel(name):
    if not _name(name):
        raise ValueError("A channel is 1-32 of a-z, 0-9, _ and -, not %r" % (name,))
    s = settings()
    s["channel"] = name
    _save(s)
    state.forget(CACHE)


# Install release `release` only (None: follow the channel's plan again).
def pin(release):
    if release is not None and not _release(release):
        raise ValueError("A pin is a release id (a string), or None, not %r" % (release,))
    s = settings()
    s["pin"] = release
    _save(s)


# Whether `release` failed here `tries` times, the last less than PENALTY seconds before t (or
# after t: a clock set back since, as an unset clock is at each reset, keeps it in the box).
def penalized(s, release, t, tries=TRIES):
    f = s["failures"].get(release)
    return bool(f) and f[0] >= tries and t - f[1] < PENALTY


def _failed(s, release, t, tries):
    f = s["failures"].pop(release, None) or [0, t]
    if f[0] >= tries:  # out of the penalty box: counted again
        f = [0, t]
    s["failures"][release] = [f[0] + 1, t]
    while len(s["failures"]) > _KEEP:
        s["failures"].pop(sorted(s["failures"], key=lambda r: s["failures"][r][1])[0])
    _save(s)


# -- the decision -----------------------------------------------------------------------------


def _running_build():
    from esp32 import Partition

    from . import identity

    head = bytearray(288)
    Partition(Partition.RUNNING).readblocks(0, head)
    return identity.build_id(head)


# What to do with manifest m on device `device` at Unix time t, with settings s:
#   "current"      the device runs this build
#   "rolled_back"  it installed this build before and rolled back from it
#   "pinned"       pinned to another release
#   "halted"       the release is halted
#   "penalty"      it failed here `tries` times within 24 h
#   "wait"         the device's bucket is not in the plan yet
#   "install"      install it
def decide(m, device, t, s, running=None, tries=TRIES):
    rel = m.get("release")
    if not _release(rel):
        raise ValueError('The manifest has no "release" id: %r' % (rel,))
    if m.get("channel") != s["channel"]:
        raise ValueError(
            "The manifest is for channel %r, this device follows %r: refused."
            % (m.get("channel"), s["channel"])
        )
    halted = m.get("halted", False)
    if halted is not True and halted is not False:
        raise ValueError('The manifest\'s "halted" must be true or false, not %r' % (halted,))
    build = m.get("build")
    if build and build == (running if running is not None else _running_build()):
        return "current"
    from . import history

    if history.rolled_back(build):
        return "rolled_back"
    if s["pin"] and s["pin"] != rel:
        return "pinned"
    if halted:
        return "halted"
    if penalized(s, rel, t, tries):
        return "penalty"
    if s["pin"] != rel and bucket(device, rel) >= basis_points(m.get("rollout"), t):
        return "wait"
    return "install"


# A failure's reason code for the report.
def reason(e):
    from . import http

    if isinstance(e, MemoryError):
        return "out_of_memory"
    if isinstance(e, http.NetError) and not isinstance(e, http.HTTPError):
        return "connection_lost"
    msg = str(e)
    for words, code in (
        (("signature", "public key"), "signature"),
        (("SHA", "mismatch", "truncated", "corrupted", "Receive", "expect"), "integrity"),
        (("size of partition", "does not fit", "ENOSPC"), "no_space"),
        (("refused", "older", "newer", "expired", "is for"), "refused"),
    ):
        for w in words:
            if w in msg:
                return code
    return "other"


# -- polling ----------------------------------------------------------------------------------


class Fleet:
    """Polls base/<channel>/manifest.json. interval (s, 3600), backoff (s, 60, doubling) up to
    cap (s, interval), tries (3), pubkey (from_json()'s), reporter, reboot (True: reset into
    the new firmware); now() (Unix time), rand() (in [0, 1)) and sleep(s) may be replaced (tests,
    a simulated fleet); other keywords go to from_json() (timeout, ca, headers, ...)."""

    def __init__(self, base, reporter=None, interval=3600, **kw):
        self.base = base if base.endswith("/") else base + "/"
        self.reporter = reporter
        self.interval = interval
        self.backoff = kw.pop("backoff", 60)
        self.cap = kw.pop("cap", interval)
        self.tries = kw.pop("tries", TRIES)
        self.pubkey = kw.pop("pubkey", None)
        self.reboot = kw.pop("reboot", True)
        self.now = kw.pop("now", now)
        self.rand = kw.pop("rand", _rand)
        self.sleep = kw.pop("sleep", time.sleep)
        self.device = kw.pop("device", None) or device_id()
        self.verbose = kw.pop("verbose", False)
        self.kw = kw
        self.errors = 0

    # Seconds until the first poll after start (within the shortest gap between two polls, see
    # above), and between polls (ok: the last poll worked).
    def first_delay(self):
        return self.rand() * self.interval * 0.9

    def next_delay(self, ok=True):
        if ok:
            self.errors = 0
            return self.interval * (0.9 + 0.2 * self.rand())
        self.errors += 1
        d = min(self.cap, self.backoff * 2 ** min(self.errors - 1, 20))
        return d / 2 + self.rand() * d / 2  # "equal jitter": within [d/2, d)

    def url(self, s=None):
        return self.base + (s or settings())["channel"] + "/manifest.json"

    def _send(self, st, m=None, reason=None, progress=None):
        if self.reporter:
            rel = m.get("release") if m else None
            to = m.get("build") if m else None
            self.reporter.send(st, release=rel, to_build=to, reason=reason, progress=progress)

    # The channel's manifest, by a conditional GET: the kept copy when the server says 304.
    def fetch(self, url):
        from . import http, manifest

        kept = state.read(CACHE, _CACHE_LIMIT)
        if not kept or kept.get("url") != url or not isinstance(kept.get("m"), dict):
            kept = None
        hdrs = {}
        if kept and kept.get("etag"):
            hdrs["If-None-Match"] = kept["etag"]
        if kept and kept.get("modified"):
            hdrs["If-Modified-Since"] = kept["modified"]
        r = http.get(url, 0, self.kw.get("ca"), self.kw.get("timeout", 30), hdrs)
        try:
            if r.status == 304:
                return kept["m"], False
            m = manifest.read(r, r.length, url)
        finally:
            r.close()
        if not isinstance(m, dict):
            raise ValueError("The manifest at %s is not a JSON object." % url)
        kept = {"url": url, "m": m}
        for k, h in (("etag", "etag"), ("modified", "last-modified")):
            v = r.headers.get(h)
            if v and len(v) < 100:
                kept[k] = v
        state.write(CACHE, kept)
        return m, True

    # One poll: the decision (see decide()), "failure" or "installed".
    def check(self):
        s = settings()
        url = self.url(s)
        m = self.fetch(url)[0]
        t = self.now()
        d = decide(m, self.device, t, s, None, self.tries)
        if self.verbose:
            print("ota.fleet: %s %s: %s" % (url, m.get("release"), d))
        if d != "install":
            return d
        self._send("checking", m)
        self._send("downloading", m, progress=0)
        last = [0]

        def progress(n, total):
            q = n * 4 // total if total > 0 else 0
            if q != last[0] and q < 4:
                last[0] = q
                self._send("downloading", m, progress=q * 25)
            elif q >= 4 and last[0] < 4:
                last[0] = 4
                self._send("verifying", m, progress=100)

        from . import update

        try:
            update.from_json(
                url,
                verbose=self.verbose,
                reboot=False,
                pubkey=self.pubkey,
                manifest=m,
                progress=progress,
                **self.kw,
            )
        except Exception as e:  # the report says why; the next poll may try again
            _failed(s, m["release"], t, self.tries)
            self._send("failure", m, reason(e))
            if self.verbose:
                print("ota.fleet: %s failed: %s" % (m["release"], e))
            return "failure"
        s["failures"].pop(m["release"], None)
        _save(s)
        self._send("installing", m, progress=100)
        self._send("rebooting", m)
        if self.reboot:
            import machine

            machine.reset()
        return "installed"

    # Poll for ever (or `polls` times): first at a random point of 0.9 x interval, then at the
    # interval +-10 %, backing off after errors. Returns the last poll's result.
    def run(self, polls=None):
        self.sleep(self.first_delay())
        d = None
        while polls is None or polls > 0:
            try:
                d = self.check()
                ok = d != "failure"
            except (OSError, ValueError) as e:
                d, ok = "error", False
                if self.verbose:
                    print("ota.fleet: poll failed: %s" % e)
            if polls is not None:
                polls -= 1
                if not polls:
                    break
            self.sleep(self.next_delay(ok))
        return d


def _rand():
    import random

    return random.getrandbits(24) / 16777216

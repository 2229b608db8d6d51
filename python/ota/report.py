# ota.report: the device tells a fleet controller (mpota fleet) where its updates stand.
#
#   import ota.report
#   r = ota.report.MQTT("broker.lan", prefix="ota")          # micropython-lib's umqtt.simple
#   r = ota.report.HTTP("https://example.com/ota/report")    # or a POST of the same JSON
#   ota.report.at_boot(r)     # early in main.py, after ota.rollback.cancel() where you confirm
#   r.send("downloading", release="2.3.1+1a2b3c4d", to_build=build, progress=25)
#
# A report is {"device", "state", "release", "from" (the running build id), "to", "reason",
# "progress", "seq" (this device's report counter), "t" (Unix time, null: clock not set)}.
# MQTT: published on "<prefix>/<device id>/ota", retained, QoS 1; the last will on that topic is
# {"device", "state": "offline", "from"}, retained: the broker sends it when the connection
# ends without a DISCONNECT (a reset, a crash; a power cut once keepalive runs out: pass
# keepalive=N and call r.ping() at least every N seconds). Device id: machine.unique_id() in hex.
#
# Never blocking for ever: every connect, write and read (umqtt.simple's wait for a PUBACK
# included, which has no timeout of its own) ends within `timeout` seconds of the call.
#
# Nothing lost: a report goes into the state file "ota_report.json" (ota/state.py: whole or not
# at all across a power cut) before it is sent, and leaves it once the broker acknowledged it
# (PUBACK) or the HTTP server answered 2xx. What could not be sent stays, the latest _KEEP of
# them, and goes first at the next send(), flush() or at_boot(), in order. For `retry` seconds
# (30) after a failure, send() only queues: a broker that is down does not slow an update down.
#
# at_boot(r) reports how the last update ended, once: "success" when the build the update made
# the boot partition runs and is confirmed (otadata VALID), "rolled_back" when the bootloader
# went back to this firmware (ota/history.py), sent by the old firmware. Returns the state sent
# (or kept to send), else None.

import json
import time

from . import state

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


FILE = "ota_report.json"
STATES = (
    "checking",
    "downloading",
    "verifying",
    "installing",
    "rebooting",
    "success",
    "failure",
    "rolled_back",
)
REASONS = (
    "signature",
    "integrity",
    "no_space",
    "out_of_memory",
    "connection_lost",
    "rolled_back",
    "halted",
    "refused",
    "other",
)
_KEEP = const(6)  # reports kept while they cannot be sent
_LIMIT = const(4096)  # bytes of the state file
_FINAL = ("success", "failure", "rolled_back")
_CLOCK_SET = const(1735689600)  # 2025-01-01: a clock before this has not been set
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0  # esp32 port: time from 2000


def device_id():
    import binascii

    import machine

    return binascii.hexlify(machine.unique_id()).decode()


def _now():
    t = int(time.time()) + _EPOCH
    return t if t >= _CLOCK_SET else None


def _ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.time() * 1000)


# The time.ticks_ms() value `ms` milliseconds from now (a deadline for _left()).
def _after(ms):
    if hasattr(time, "ticks_add"):
        return time.ticks_add(time.ticks_ms(), ms)
    return _ms() + ms


def _left(deadline):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(deadline, time.ticks_ms())
    return deadline - _ms()


def _running_build():
    from esp32 import Partition

    from . import identity

    head = bytearray(288)
    Partition(Partition.RUNNING).readblocks(0, head)
    return identity.build_id(head)


def _load():
    s = state.read(FILE, _LIMIT) or {}
    q = s.get("q")
    s["q"] = [p for p in q if isinstance(p, dict)][-_KEEP:] if isinstance(q, list) else []
    seq = s.get("seq")
    s["seq"] = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 0
    return s


def _save(s):
    try:
        state.write(FILE, s)
    except OSError as e:
        print("ota.report: cannot write %s: %s" % (state.path(FILE), e))


class _Reporter:
    # send() queues the report in the state file, then sends what is queued (_put(), one
    # report at a time, by the transport). Returns True when nothing is left unsent.
    def __init__(self, device, timeout, retry):
        self.device = device or device_id()
        self.timeout = timeout
        self.build = _running_build()
        self.deadline = 0
        self.retry = retry  # s after a failure during which send() only queues
        self.down = None  # time.ticks_ms() of the last failure

    def report(self, st, release=None, to_build=None, reason=None, progress=None, seq=0):
        return {
            "device": self.device,
            "state": st,
            "release": release,
            "from": self.build,
            "to": to_build,
            "reason": reason,
            "progress": progress,
            "seq": seq,
            "t": _now(),
        }

    def send(self, st, release=None, to_build=None, reason=None, progress=None):
        if st not in STATES:
            raise ValueError("ota.report: state must be one of %s, not %r" % (STATES, st))
        if reason is not None and reason not in REASONS:
            raise ValueError("ota.report: reason must be one of %s, not %r" % (REASONS, reason))
        s = _load()
        s["seq"] += 1
        _queue(s, self.report(st, release, to_build, reason, progress, s["seq"]))
        if release and to_build:
            s["last"] = [release, to_build]
        _save(s)
        if self.down is not None and 0 <= -_left(self.down) < self.retry * 1000:
            return False  # it failed a moment ago: kept, without waiting for it again
        return self._flush(s)

    # Send what earlier calls could not (now, whenever the last try was). True when nothing
    # is left.
    def flush(self):
        return self._flush(_load())

    def _flush(self, s):
        if not s["q"]:
            return True
        self.deadline = _after(int(self.timeout * 1000))
        sent = 0
        try:
            for p in s["q"]:
                self._put(p)
                sent += 1
        except Exception as e:  # noqa: BLE001 (OSError, umqtt's MQTTException, a broken reply)
            self._drop()
            self.down = _ms()
            print("ota.report: %d report(s) kept for later: %r" % (len(s["q"]) - sent, e))
        if sent:
            s["q"] = s["q"][sent:]
            _save(s)
        if not s["q"]:
            self.down = None
        return not s["q"]

    def _drop(self):
        pass

    def close(self):
        self._drop()


def _queue(s, p):
    q = s["q"]
    q.append(p)
    while len(q) > _KEEP:  # the oldest report that is not an outcome goes first
        drop = 0
        for i, x in enumerate(q[:-1]):
            if x.get("state") not in _FINAL:
                drop = i
                break
        q.pop(drop)


# -- MQTT, through micropython-lib's umqtt.simple ----------------------------------------------


class _Sock:
    # The socket umqtt.simple gets: every connect, write and read bounded by the reporter's
    # deadline (umqtt's own socket waits for ever: its publish() loops on wait_msg() until a
    # PUBACK, which turns the socket back to blocking).
    def __init__(self, owner):
        self.o = owner
        self.s = None

    def _t(self):
        left = _left(self.o.deadline)
        if left <= 0:
            raise OSError(110, "ota.report: no answer from the broker in time")
        self.s.settimeout(left / 1000)

    def connect(self, addr):
        import socket

        ai = socket.getaddrinfo(addr[0], addr[1], 0, socket.SOCK_STREAM)[0]
        self.s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        self._t()
        self.s.connect(ai[-1])

    def write(self, buf, n=None):
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        while len(mv):
            self._t()
            k = self.s.send(mv)
            mv = mv[k:]
        return n

    def read(self, n):
        out = b""
        while len(out) < n:
            self._t()
            b = self.s.recv(n - len(out))
            if not b:
                break
            out += b
        return out

    def setblocking(self, flag):
        pass

    def settimeout(self, t):
        pass

    def close(self):
        if self.s:
            self.s.close()


class _Net:
    # What umqtt.simple sees as its `socket` module while it connects.
    def __init__(self, owner):
        self.o = owner

    def socket(self, *args):
        return _Sock(self.o)

    def getaddrinfo(self, host, port, *args):
        return [(None, None, None, None, (host, port))]


class MQTT(_Reporter):
    """Reports to an MQTT 3.1.1 broker: server, port (1883), prefix ("ota"), user, password,
    timeout (s, 5: bounds each send), retry (s, 30: after a failure, send() only queues for
    that long), keepalive (s, 0: none), device (machine.unique_id()).
    The connection stays open between reports (for the last will); close() ends it."""

    def __init__(self, server, port=1883, prefix="ota", user=None, password=None, **kw):
        _Reporter.__init__(self, kw.get("device"), kw.get("timeout", 5), kw.get("retry", 30))
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = kw.get("keepalive", 0)
        self.topic = ("%s/%s/ota" % (prefix, self.device)).encode()
        self.c = None

    def _connect(self):
        from umqtt import simple

        c = simple.MQTTClient(
            ("ota-" + self.device).encode(),
            self.server,
            self.port,
            self.user,
            self.password,
            self.keepalive,
        )
        will = {"device": self.device, "state": "offline", "from": self.build}
        c.set_last_will(self.topic, json.dumps(will).encode(), True, 1)
        real = simple.socket
        simple.socket = _Net(self)
        try:
            c.connect()
        except Exception:
            if c.sock:
                c.sock.close()
            raise
        finally:
            simple.socket = real
        self.c = c

    def _put(self, p):
        if self.c is None:
            self._connect()
        self.c.publish(self.topic, json.dumps(p).encode(), True, 1)

    # Tell the broker this device is alive (with keepalive=N: at least every N seconds).
    def ping(self):
        if self.c is None:
            return False
        self.deadline = _after(int(self.timeout * 1000))
        try:
            self.c.ping()
            return True
        except OSError:
            self._drop()
            return False

    def _drop(self):
        if self.c is not None:
            self.c.sock.close()
            self.c = None

    # A clean DISCONNECT: the broker forgets the will.
    def close(self):
        if self.c is not None:
            self.deadline = _after(int(self.timeout * 1000))
            try:
                self.c.disconnect()
            except OSError:
                pass
            self._drop()


# -- HTTP POST to any URL ----------------------------------------------------------------------


class HTTP(_Reporter):
    """Reports POSTed as JSON to url (http or https; ca: the CA that signs the server's
    certificate), headers (a dict, e.g. an Authorization), timeout (s, 5: bounds each send),
    retry (s, 30), device, as MQTT's.
    Any 2xx answer is an acknowledgement."""

    def __init__(self, url, headers=None, ca=None, **kw):
        from . import http

        _Reporter.__init__(self, kw.get("device"), kw.get("timeout", 5), kw.get("retry", 30))
        http._split(url)  # ValueError now for a URL that is not http(s)
        self.url = url
        self.headers = http._headers(headers, None)
        self.ca = ca

    def _put(self, p):
        from . import http

        scheme, host, port, path = http._split(self.url)
        body = json.dumps(p).encode()
        s = http._connect(scheme, host, port, self.ca, self.timeout, self.deadline, self.url)
        try:
            if port != http._PORTS[scheme]:
                host = "%s:%d" % (host, port)
            req = "POST %s HTTP/1.0\r\nHost: %s\r\n" % (path, host)
            req += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            for k in self.headers:
                req += "%s: %s\r\n" % (k, self.headers[k])
            s.write((req + "\r\n").encode() + body)
            if s.poll:
                s.s.setblocking(False)
            line = s.readline(200).split()
        finally:
            s.close()
        if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
            raise OSError(5, "not an HTTP answer from %s" % self.url)
        if not 200 <= int(line[1]) < 300:
            raise OSError(5, "HTTP %s from %s" % (line[1].decode(), self.url))


# -- how the last update ended -----------------------------------------------------------------


def at_boot(reporter):
    from esp32 import Partition

    from . import _otadata, history

    s = _load()
    h = history.load()
    t = h["trial"]
    st = None
    key = None
    if t:
        key = [t["slot"], t["seq"]]
        if key != s.get("trial"):
            running = Partition(Partition.RUNNING).info()
            for p in _otadata.ota_partitions():
                info = p.info()
                if info[4] != t["slot"]:
                    continue
                rec = _otadata.record(info)
                if not rec or rec[0] != t["seq"]:
                    break
                if rec[1] == _otadata.VALID and info[2] == running[2]:
                    st = "success"
                elif rec[1] in (_otadata.ABORTED, _otadata.INVALID):
                    st = "rolled_back"
    rb = history.notice()["rolled_back"]
    last_rb = rb[-1] if rb else None
    build = t["build"] if t else None
    if st is None and last_rb and last_rb != s.get("rb") and "rb" in s:
        st, build = "rolled_back", last_rb  # noticed before this call (ota.status(), ...)
    if "rb" not in s or st:
        s["rb"] = last_rb
        if st:
            s["trial"] = key
        _save(s)
    if not st:
        reporter.flush()
        return None
    last = s.get("last")
    rel = last[0] if isinstance(last, list) and len(last) == 2 and last[1] == build else None
    rel = rel or history.release(build)
    reporter.send(st, rel, build, "rolled_back" if st == "rolled_back" else None)
    return st

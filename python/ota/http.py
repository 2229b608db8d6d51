# A small HTTP/1.0 GET client for firmware downloads, over socket and ssl: Range requests,
# redirects, status errors, and TLS with certificate checking when given a CA.
#
#   r = get(url, start=0, ca=None, timeout=30, headers=None, auth=None, deadline=None)
#   r.status, r.headers (names in lower case), r.start (first byte served),
#   r.length (bytes in the body, -1 unknown),
#   r.total (size of the whole file, -1 unknown), r.readinto(buf), r.read(n), r.close()
#   r.expect: bytes the caller expects when the server gives no Content-Length (a connection
#   closed before them is a dropped download, NetError, not the end of the file)
#
# timeout bounds each wait on the socket; deadline (a time.ticks_ms() value) bounds the whole
# request, headers and body, so that a server sending a byte a second cannot hold the device.
# Headers are limited in size; a relative Location is resolved against the request's URL
# (join()); a redirect from https to plain http is refused (ValueError naming both URLs), with or
# without a CA.
#
# With ca (the CA certificate, PEM or DER bytes) the server's certificate must chain to it and
# name the host; without, https is encrypted but the server is not authenticated (as
# MicroPython's requests does): sign your manifests, or pass ca.
#
# Conditional requests: with an If-None-Match (an ETag) or If-Modified-Since (a Last-Modified)
# header among the caller's, a 304 Not Modified is an answer, not an error: r.status 304, an
# empty body (ota/fleet.py polls a manifest this way). Without them a 304 is an HTTPError.
#
# headers (a dict) and auth ((user, password): HTTP basic auth) are sent as `requests.get()`
# sends them; a header the caller gives replaces this client's own (Host, User-Agent). They go to
# the URL's origin (scheme, host and port) only: none of them follows a redirect to another
# origin, not even http to https on the same host (a token may be worth more than the file).

import socket
import sys
import time

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_HEADERS = 8192  # bytes of status line and headers accepted from a server


class NetError(OSError):
    # The network failed the download (connection refused or dropped, timeout, TLS, a body
    # cut short): worth another try. .status is 0, or the HTTP status of an HTTPError.
    status = 0


class HTTPError(NetError):
    # An HTTP status the download cannot use (4xx: do not retry; 5xx: may retry).
    def __init__(self, status, reason, url):
        super().__init__(5, "HTTP %d %s for %s" % (status, reason, url))  # EIO
        self.status = status


def _net(e):
    if isinstance(e, NetError):
        return e
    return NetError(*e.args) if e.args else NetError(5, "network error")


def _split(url):
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise ValueError("not an http(s) URL: %r" % url)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError("not an http(s) URL: %r" % url)
    return scheme, host, int(port) if port else _PORTS[scheme], "/" + path


_PORTS = {"http": 80, "https": 443}


# ref (a Location header, a manifest's "firmware") resolved against the URL base (RFC 3986 5.2):
# absolute, scheme-relative (//host/...), absolute path or relative path; the dot segments of a
# relative one removed ("../files/x" beside ".../stable/manifest.json" is ".../files/x"), as a
# server or bucket that takes the path literally needs.
def join(base, ref):
    if "://" in ref:
        return ref
    scheme, _, rest = base.partition("://")
    if ref.startswith("//"):
        return scheme + ":" + ref
    hostport, slash, path = rest.partition("/")
    if ref.startswith("/"):
        return "%s://%s%s" % (scheme, hostport, ref)
    path = (slash + path).split("?")[0].split("#")[0]
    path = (path[: path.rfind("/") + 1] or "/") + ref
    if "./" in ref or ref in (".", ".."):
        path, q, query = path.partition("?")
        path = _dots(path) + q + query
    return "%s://%s%s" % (scheme, hostport, path)


# An absolute path without its "." and ".." segments (RFC 3986 5.2.4).
def _dots(path):
    segs = path.split("/")[1:]
    out = []
    for s in segs:
        if s == "..":
            if out:
                out.pop()
        elif s != ".":
            out.append(s)
    if segs[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


# Milliseconds left before deadline (a time.ticks_ms() value; CPython: time.time() * 1000).
def _left(deadline):
    if hasattr(time, "ticks_ms"):
        return time.ticks_diff(deadline, time.ticks_ms())
    return deadline - time.time() * 1000


def _late(deadline):
    return deadline is not None and _left(deadline) <= 0


class _Conn:
    # A connected socket that reads what has come (never waits to fill the whole buffer, as a
    # MicroPython stream read does), each wait bounded by the timeout and by the deadline: a
    # server that sends a byte a second cannot hold a read, or the call, beyond them.
    def __init__(self, s, timeout, deadline, url):
        self.s = s
        self.timeout = timeout
        self.deadline = deadline
        self.url = url
        self.poll = None
        if sys.implementation.name == "micropython":  # non-blocking reads, poll() to wait
            import select

            self.poll = select.poll()
            self.poll.register(s, select.POLLIN)
        self.one = bytearray(1)

    def write(self, data):
        if self.poll:
            self.s.write(data)
        else:
            self.s.sendall(data)

    def _wait_ms(self):
        ms = int(self.timeout * 1000)
        if self.deadline is not None:
            left = _left(self.deadline)
            if left <= 0:
                raise self._timed_out()
            ms = min(ms, int(left) + 1)
        return ms

    def _timed_out(self):
        if _late(self.deadline):
            return NetError(110, "the download's deadline passed (%s)" % self.url)
        return NetError(110, "no data from the server for %s s (%s)" % (self.timeout, self.url))

    # Bytes that have come, into buf (at least 1); 0 when the server closed the connection.
    def readinto(self, buf):
        while True:
            ms = self._wait_ms()
            if self.poll:
                n = self.s.readinto(buf)
                if n is not None:
                    return n
                if not _ready(self.poll, ms):
                    raise self._timed_out()
            else:
                self.s.settimeout(ms / 1000)
                try:
                    return self.s.recv_into(buf)
                except OSError as e:  # socket.timeout is an OSError
                    if "timed out" in str(e):
                        raise self._timed_out()
                    raise

    # One header line of at most `limit` bytes (a longer one: NetError), read byte by byte.
    def readline(self, limit):
        out = bytearray()
        one = self.one
        while len(out) <= limit:
            if not self.readinto(one):
                break
            out.append(one[0])
            if one[0] == 10:
                return bytes(out)
        if len(out) > limit:
            raise NetError(
                5, "the server's headers are longer than %d bytes (%s)" % (_MAX_HEADERS, self.url)
            )
        return bytes(out)

    def close(self):
        self.s.close()


# Whether the socket has input within ms milliseconds (ipoll: MicroPython's, no allocation).
def _ready(poll, ms):
    for _ in poll.ipoll(ms):
        return True
    return False


# e (an OSError from getaddrinfo or connect) as a NetError whose message names where: its
# errno is kept (MicroPython's unix port gives getaddrinfo's as text: "[addrinfo error -2]";
# MicroPython prints the errno's name before the message, CPython its number).
def _where(e, what):
    a = e.args
    n = a[0] if a and isinstance(a[0], int) else 5  # EIO
    why = a[1] if len(a) > 1 else (a[0] if a and not isinstance(a[0], int) else "")
    return NetError(n, "%s: %s" % (what, why) if why else what)


def _connect(scheme, host, port, ca, timeout, deadline, url):
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        raise _where(e, "cannot resolve %s (%s)" % (host, url))
    s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
    try:
        s.settimeout(timeout)
        try:
            s.connect(ai[-1])
        except OSError as e:
            raise _where(e, "cannot connect to %s:%d (%s)" % (host, port, url))
        if scheme == "https":
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=ca)
            else:
                if hasattr(ctx, "check_hostname"):
                    ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            try:
                s = ctx.wrap_socket(s, server_hostname=host)
            except (OSError, ValueError) as e:  # MicroPython: ValueError for a bad certificate
                raise NetError(5, "TLS with %s failed: %s" % (host, str(e).strip()))
    except BaseException:
        s.close()
        raise
    return _Conn(s, timeout, deadline, url)


class Response:
    def __init__(self, stream, status, headers, start, url=""):
        self._s = stream
        self.status = status
        self.headers = headers
        self.start = start
        self.url = url
        self.expect = -1
        self._got = 0
        cl = headers.get("content-length", "-1")
        self.length = int(cl) if cl.isdigit() or cl == "-1" else -1
        self.total = self.length if status == 200 else -1
        rng = headers.get("content-range", "")
        if status == 206 and "/" in rng:
            first = rng.split()[-1].split("-")[0]
            self.start = int(first)
            total = rng.split("/")[-1]
            self.total = int(total) if total.isdigit() else -1
        self._left = self.length

    # Body bytes into buf; 0 at the end. A body shorter than its Content-Length raises OSError.
    def readinto(self, buf):
        if self._left == 0:
            return 0
        mv = memoryview(buf)
        if 0 < self._left < len(mv):
            mv = mv[: self._left]
        try:
            n = self._s.readinto(mv)
        except OSError as e:
            raise _net(e)
        if n is None:
            return None
        if not n:
            if self._left > 0:
                raise NetError(5, "connection closed %d bytes before the end" % self._left)
            if self._got < self.expect:
                raise NetError(
                    5,
                    "connection closed after %d of %d bytes (no Content-Length)"
                    % (self._got, self.expect),
                )
            return 0
        self._got += n
        if self._left > 0:
            self._left -= n
        return n

    def read(self, n=-1):
        out = bytearray()
        buf = bytearray(1024)
        while n < 0 or len(out) < n:
            k = self.readinto(buf if n < 0 else memoryview(buf)[: min(1024, n - len(out))])
            if not k:
                break
            out.extend(memoryview(buf)[:k])
        return bytes(out)

    def close(self):
        self._s.close()


# The request's headers: the caller's (headers, auth) over this client's defaults.
def _headers(headers, auth):
    out = {}
    for k in headers or ():
        v = headers[k]
        if not isinstance(v, str):
            v = v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
        if not k or [c for c in k + v if c in "\r\n"] or ":" in k:
            raise ValueError("Invalid HTTP header: %r: %r" % (k, v))
        out[k] = v
    if auth is not None:
        if not isinstance(auth, (tuple, list)) or len(auth) != 2:
            raise ValueError("auth must be a (username, password) tuple, not %r" % (auth,))
        import binascii

        cred = []
        for x in auth:
            cred.append(x if isinstance(x, (bytes, bytearray)) else str(x).encode())
        b64 = binascii.b2a_base64(bytes(cred[0]) + b":" + bytes(cred[1]))
        out["Authorization"] = "Basic " + b64.decode().strip()
    return out


def _has(hdrs, name):
    for k in hdrs:
        if k.lower() == name:
            return True
    return False


def get(url, start=0, ca=None, timeout=30, headers=None, auth=None, deadline=None):
    hdrs = _headers(headers, auth)  # ValueError for bad ones, before any connection
    try:
        return _get(url, start, ca, timeout, hdrs, deadline)
    except OSError as e:
        raise _net(e)


def _get(url, start, ca, timeout, headers, deadline):
    origin = prev = None  # the origin and URL that redirected here
    for _ in range(4):
        scheme, host, port, path = _split(url)
        if origin and origin != (scheme, host, port):
            # Plain http would show the request, and its answer, to anyone on the way.
            if origin[0] == "https" and scheme != "https":
                raise ValueError("refused: %s redirects to plain http (%s)" % (prev, url))
            # The caller's headers and auth are for the origin they were given with only.
            headers = {}
        origin = (scheme, host, port)
        s = _connect(scheme, host, port, ca, timeout, deadline, url)
        try:
            req = "GET %s HTTP/1.0\r\n" % path
            if not _has(headers, "host"):
                req += "Host: %s\r\n" % (
                    host if port == _PORTS[scheme] else "%s:%d" % (host, port)
                )
            if not _has(headers, "user-agent"):
                req += "User-Agent: micropython-ota\r\n"
            if start:
                req += "Range: bytes=%d-\r\n" % start
            for k in headers:
                req += "%s: %s\r\n" % (k, headers[k])
            s.write((req + "\r\n").encode())
            if s.poll:
                s.s.setblocking(False)  # from here on, reads wait in poll() (see _Conn)
            left = _MAX_HEADERS
            raw = s.readline(left)
            left -= len(raw)
            line = raw.decode().split(None, 2)
            if len(line) < 2 or not line[0].startswith("HTTP/") or not line[1].isdigit():
                raise NetError(5, "not an HTTP response from %s" % host)
            status, reason = int(line[1]), (line[2].strip() if len(line) > 2 else "")
            hdrs = {}
            while True:
                h = s.readline(left)
                left -= len(h)
                if not h:
                    raise NetError(5, "connection closed in the headers (%s)" % url)
                if h in (b"\r\n", b"\n"):
                    break
                k, colon, v = h.decode().partition(":")
                if not colon:
                    raise NetError(5, "a header line without ':' from %s: %r" % (host, h[:40]))
                hdrs[k.strip().lower()] = v.strip()
        except BaseException:
            s.close()
            raise
        if status in _REDIRECTS and "location" in hdrs:
            s.close()
            prev, url = url, join(url, hdrs["location"])
            continue
        if status == 304 and (
            _has(headers, "if-none-match") or _has(headers, "if-modified-since")
        ):
            # Not modified, as asked: no body (RFC 9110 15.4.5); the caller keeps its copy.
            s.close()
            r = Response(s, 304, hdrs, 0, url)
            r.length = r._left = 0
            return r
        if status not in (200, 206):
            s.close()
            raise HTTPError(status, reason, url)
        problem = None
        if "chunked" in hdrs.get("transfer-encoding", ""):
            problem = "chunked transfer encoding is not supported"
        elif hdrs.get("content-encoding", "identity") != "identity":
            problem = (
                "the server sent a %s-encoded body, which was not asked for"
                % (hdrs["content-encoding"])
            )
        elif status == 206 and not start:
            problem = "the server sent part of the file (206) to a request for all of it"
        if problem:
            s.close()
            raise ValueError("%s (%s)" % (problem, url))
        r = Response(s, status, hdrs, start if status == 206 else 0, url)
        if status == 206 and r.start != start:
            s.close()
            raise ValueError(
                "asked for the bytes from %d, the server sent them from %d (%s)"
                % (start, r.start, url)
            )
        return r
    raise NetError(5, "too many redirects for %s" % url)

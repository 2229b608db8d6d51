# A small HTTP/1.0 GET client for firmware downloads, over socket and ssl: Range requests,
# redirects, status errors, and TLS with certificate checking when given a CA.
#
#   r = get(url, start=0, ca=None, timeout=30, headers=None, auth=None)
#   r.status, r.start (first byte served), r.length (bytes in the body, -1 unknown),
#   r.total (size of the whole file, -1 unknown), r.readinto(buf), r.read(n), r.close()
#
# With ca (the CA certificate, PEM or DER bytes) the server's certificate must chain to it and
# name the host; without, https is encrypted but the server is not authenticated (as
# MicroPython's requests does): sign your manifests, or pass ca.
#
# headers (a dict) and auth ((user, password): HTTP basic auth) are sent as `requests.get()`
# sends them; a header the caller gives replaces this client's own (Host, User-Agent). As
# CPython's requests does, the Authorization header (and a Host given by the caller) is not sent
# on to another host or port when the server redirects there.

import socket

_REDIRECTS = (301, 302, 303, 307, 308)


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
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80), "/" + path


def _connect(scheme, host, port, ca, timeout):
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
    try:
        s.settimeout(timeout)
        s.connect(ai[-1])
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
    if not hasattr(s, "readinto"):  # CPython: a file over the socket, which closes it
        f = s.makefile("rwb")
        s.close()  # (deferred by CPython until f is closed)
        s = f
    return s


class Response:
    def __init__(self, stream, status, headers, start):
        self._s = stream
        self.status = status
        self.headers = headers
        self.start = start
        self.length = int(headers.get("content-length", -1))
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
            return 0
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


def get(url, start=0, ca=None, timeout=30, headers=None, auth=None):
    hdrs = _headers(headers, auth)  # ValueError for bad ones, before any connection
    try:
        return _get(url, start, ca, timeout, hdrs)
    except OSError as e:
        raise _net(e)


def _get(url, start, ca, timeout, headers):
    origin = None
    for _ in range(4):
        scheme, host, port, path = _split(url)
        if (
            origin
            and origin != (host, port)
            and not (
                origin == (host, 80) and scheme == "https" and port == 443  # http -> https
            )
        ):
            drop = ("authorization", "host")
            headers = {k: headers[k] for k in headers if k.lower() not in drop}
        origin = (host, port)
        s = _connect(scheme, host, port, ca, timeout)
        try:
            req = "GET %s HTTP/1.0\r\n" % path
            if not _has(headers, "host"):
                req += "Host: %s\r\n" % host
            if not _has(headers, "user-agent"):
                req += "User-Agent: micropython-ota\r\n"
            if start:
                req += "Range: bytes=%d-\r\n" % start
            for k in headers:
                req += "%s: %s\r\n" % (k, headers[k])
            s.write((req + "\r\n").encode())
            if hasattr(s, "flush"):
                s.flush()
            line = s.readline().decode().split(None, 2)
            if len(line) < 2 or not line[0].startswith("HTTP/"):
                raise NetError(5, "not an HTTP response from %s" % host)
            status, reason = int(line[1]), (line[2].strip() if len(line) > 2 else "")
            hdrs = {}
            while True:
                h = s.readline()
                if not h or h in (b"\r\n", b"\n"):
                    break
                k, _, v = h.decode().partition(":")
                hdrs[k.strip().lower()] = v.strip()
        except BaseException:
            s.close()
            raise
        if status in _REDIRECTS and "location" in hdrs:
            s.close()
            loc = hdrs["location"]
            url = loc if "://" in loc else "%s://%s:%d%s" % (scheme, host, port, loc)
            continue
        if status not in (200, 206):
            s.close()
            raise HTTPError(status, reason, url)
        if "chunked" in hdrs.get("transfer-encoding", ""):
            s.close()
            raise ValueError("chunked transfer encoding is not supported (%s)" % url)
        return Response(s, status, hdrs, start if status == 206 else 0)
    raise NetError(5, "too many redirects for %s" % url)

# MicroPython's urequests API (get/post -> Response with .raw, .status_code, .content, .text,
# .json(), .close()) for device code run under CPython in the simulator, over http.client.
import http.client
import json as _json
from urllib.parse import urlsplit

from hosts import lookup


class Response:
    def __init__(self, conn, resp):
        self._conn = conn
        self.raw = resp  # http.client.HTTPResponse has readinto()
        self.status_code = resp.status
        self.reason = resp.reason.encode()
        self.headers = dict(resp.getheaders())
        self._content = None

    def close(self):
        self.raw.close()
        self._conn.close()

    @property
    def content(self):
        if self._content is None:
            self._content = self.raw.read()
            self.close()
        return self._content

    @property
    def text(self):
        return self.content.decode()

    def json(self):
        return _json.loads(self.content)


def request(method, url, data=None, json=None, headers=None, stream=None, timeout=None, **kw):
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    host, port = lookup(u.hostname, port)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    body = data
    headers = dict(headers or {})
    if json is not None:
        body = _json.dumps(json).encode()
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, (u.path or "/") + ("?" + u.query if u.query else ""), body, headers)
    return Response(conn, conn.getresponse())


def get(url, **kw):
    return request("GET", url, **kw)


def head(url, **kw):
    return request("HEAD", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)

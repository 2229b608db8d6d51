"""mpota's Range-capable HTTP server, with faults to inject for the network tests: drop the
connection after n body bytes, ignore Range, answer with an error status, each for a number of
requests; plus a log of the requests (path, Range header), their headers, and the body bytes
sent per path."""

import socket
import ssl

from mpota import serve


class FaultyHandler(serve.RangeRequestHandler):
    def do_GET(self):
        srv = self.server
        faults = srv.faults
        srv.log.append((self.path, self.headers.get("Range")))
        srv.headers.append((self.path, dict(self.headers.items())))
        firmware = not self.path.endswith(".json")
        moved = faults.get("redirect", {}).get(self.path)
        if moved:
            self.send_response(302)
            self.send_header("Location", moved)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if firmware and faults.get("status_times", 0) > 0:
            faults["status_times"] -= 1
            self.send_error(faults["status"])
            return
        if firmware and faults.get("ignore_range"):
            del self.headers["Range"]
        f = self.send_head()
        if f is None:
            return
        try:
            limit = None
            if firmware and faults.get("drop_times", 0) > 0:
                faults["drop_times"] -= 1
                limit = faults["drop_after"]
            sent = 0
            while True:
                chunk = f.read(16384 if limit is None else min(16384, limit - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                srv.sent[self.path] = srv.sent.get(self.path, 0) + len(chunk)
            if limit is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        finally:
            f.close()


def start(directory, tls=None):
    """A faulty server on 127.0.0.1; tls: (certfile, keyfile) for https."""
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
    server = serve.start(directory, handler=FaultyHandler, tls=ctx)
    server.faults = {}
    server.log = []
    server.headers = []  # (path, {name: value}) per request
    server.sent = {}  # path -> body bytes written to the socket
    return server

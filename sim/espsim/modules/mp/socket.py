# MicroPython's socket with the simulated LAN's host table (hosts.py) in getaddrinfo().
import usocket as _socket
from hosts import lookup as _lookup
from usocket import *  # noqa: F403


def getaddrinfo(host, port, *args):
    host, port = _lookup(host, port)
    return _socket.getaddrinfo(host, port, *args)


# $ESPSIM_RECV_MAX=N: a TCP stack that hands the application at most N bytes per read, as lwIP
# does segment by segment (536: the default MSS, 1460: Ethernet's). bench/flashtime.py uses it
# for the reads that ota.http's client makes ("what has come").
def _recv_max():
    import os

    n = os.getenv("ESPSIM_RECV_MAX")
    return int(n) if n else 0


_MAX = _recv_max()

if _MAX:
    import io as _io
    import select as _select

    _real = _socket.socket

    class socket(_io.IOBase):  # noqa: F811
        def __init__(self, *args):
            self._s = _real(*args)
            self._p = _select.poll()
            self._p.register(self._s, _select.POLLIN)

        def connect(self, addr):
            return self._s.connect(addr)

        def settimeout(self, t):
            return self._s.settimeout(t)

        def setblocking(self, flag):
            return self._s.setblocking(flag)

        def write(self, data):
            return self._s.write(data)

        def send(self, data):
            return self._s.send(data)

        def readinto(self, buf, n=-1):
            n = len(buf) if n < 0 else n
            return self._s.readinto(buf, min(n, _MAX))

        def close(self):
            return self._s.close()

        def ioctl(self, req, arg):
            if req == 3:  # MP_STREAM_POLL: the real socket's readiness, without waiting
                for _, ev in self._p.ipoll(0):
                    return ev & arg
                return 0
            if req == 4:  # MP_STREAM_CLOSE
                self._s.close()
                return 0
            return -22

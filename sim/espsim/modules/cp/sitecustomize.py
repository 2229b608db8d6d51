# Device code under CPython in the simulator: the simulated LAN's host table (hosts.py) in
# socket.getaddrinfo(), as MicroPython's socket gets it from mp/socket.py.
import socket

from hosts import lookup as _lookup

_getaddrinfo = socket.getaddrinfo


def _mapped(host, port, *args, **kw):
    host, port = _lookup(host, port)
    return _getaddrinfo(host, port, *args, **kw)


socket.getaddrinfo = _mapped


# The firmware's identity (espsim/identity.py) in os.uname(), sys.implementation (version,
# _machine; name stays "cpython", which CPython's own import machinery relies on) and
# sys.version, from the banner of the image in the running slot.
def _identity():
    import os
    import sys
    import types

    from espsim import identity

    real_uname = os.uname
    os.uname = lambda: identity.uname(real_uname)
    impl = identity.implementation(sys.implementation)
    if impl is not sys.implementation:
        ns = types.SimpleNamespace(**vars(sys.implementation))
        ns.version = impl.version
        ns._machine = impl._machine
        sys.implementation = ns
        sys.version = identity.version(sys.version)


# io.BufferedWriter as MicroPython has it (bufwriter.py) for what CPython's own one refuses: a
# stream that is not a writable io.RawIOBase, e.g. an io.IOBase over a block device. CPython's
# own streams (sockets' makefile(), ...) still get CPython's.
def _bufferedwriter():
    import io

    import bufwriter

    cpython = io.BufferedWriter

    class BufferedWriter(bufwriter.BufferedWriter):
        def __new__(cls, stream, buffer_size=io.DEFAULT_BUFFER_SIZE):
            if isinstance(stream, io.RawIOBase) and stream.writable():
                return cpython(stream, buffer_size)
            return super().__new__(cls)

    io.BufferedWriter = BufferedWriter


_identity()
_bufferedwriter()


# $ESPSIM_RECV_MAX=N: at most N bytes per read from a TCP socket (see mp/socket.py).
def _recv_max():
    import os

    n = int(os.getenv("ESPSIM_RECV_MAX") or 0)
    if not n:
        return

    class _Socket(socket.socket):
        def recv_into(self, buf, nbytes=0, flags=0):
            return super().recv_into(buf, min(nbytes or len(buf), n), flags)

        def recv(self, bufsize, flags=0):
            return super().recv(min(bufsize, n), flags)

    socket.socket = _Socket


_recv_max()

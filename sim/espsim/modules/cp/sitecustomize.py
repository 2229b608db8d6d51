# Device code under CPython in the simulator: the simulated LAN's host table (hosts.py) in
# socket.getaddrinfo(), as MicroPython's socket gets it from mp/socket.py.
import socket

from hosts import lookup as _lookup

_getaddrinfo = socket.getaddrinfo


def _mapped(host, port, *args, **kw):
    host, port = _lookup(host, port)
    return _getaddrinfo(host, port, *args, **kw)


socket.getaddrinfo = _mapped

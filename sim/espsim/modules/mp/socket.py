# MicroPython's socket with the simulated LAN's host table (hosts.py) in getaddrinfo().
import usocket as _socket
from hosts import lookup as _lookup
from usocket import *  # noqa: F403


def getaddrinfo(host, port, *args):
    host, port = _lookup(host, port)
    return _socket.getaddrinfo(host, port, *args)

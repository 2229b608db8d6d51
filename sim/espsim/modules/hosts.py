# The simulated device's LAN: $ESPSIM_HOSTS maps host names (and ports) to addresses on this PC,
# e.g. "nas.lan=127.0.0.1:8123" sends nas.lan:80 (and any port) to 127.0.0.1:8123, and
# "nas.lan:443=127.0.0.1:8443" maps one port only. Unmapped names resolve as usual.

import os


def lookup(host, port):
    spec = os.getenv("ESPSIM_HOSTS") or ""
    for item in spec.split(","):
        if "=" not in item:
            continue
        name, to = item.strip().split("=", 1)
        nport = None
        if ":" in name:
            name, nport = name.split(":", 1)
            nport = int(nport)
        if name != host or (nport is not None and nport != port):
            continue
        if ":" in to:
            addr, p = to.split(":", 1)
            return addr, int(p)
        return to, port
    return host, port

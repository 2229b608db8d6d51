# `os` of the simulated device under MicroPython's unix port: the interpreter's built-in os
# (extensible: this file shadows it), with the esp32 port's os.uname() naming the firmware in
# the running slot (espsim/identity.py).

import sys

_path = sys.path[:]
sys.path.clear()
try:
    import os as _os
finally:
    sys.path.extend(_path)

for _k in dir(_os):
    if not _k.startswith("__"):
        globals()[_k] = getattr(_os, _k)


def uname():
    from espsim import identity

    return identity.uname()

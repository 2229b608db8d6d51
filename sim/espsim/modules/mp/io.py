# `io` of the simulated device under MicroPython's unix port: the interpreter's built-in io
# (an extensible built-in: this file shadows it, and an import with an empty sys.path gets the
# built-in), plus io.BufferedWriter, which the esp32 firmware has and the unix port lacks.

import sys

_path = sys.path[:]
sys.path.clear()
try:
    import io as _io
finally:
    sys.path.extend(_path)

for _k in dir(_io):
    if not _k.startswith("__"):
        globals()[_k] = getattr(_io, _k)

if not hasattr(_io, "BufferedWriter"):
    from bufwriter import BufferedWriter  # noqa: F401

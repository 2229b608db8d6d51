# `sys` of the simulated device under MicroPython: the built-in sys cannot be shadowed by a file,
# so simboot puts this module in sys.modules["sys"]. Every attribute is the built-in one, except
# sys.implementation and sys.version, which name the firmware in the running slot.

import sys as _sys


def __getattr__(name):
    if name == "implementation" or name == "version":
        from espsim import identity

        if name == "version":
            v = identity.version(_sys.version)
        else:
            v = identity.implementation(_sys.implementation)
        globals()[name] = v
        return v
    return getattr(_sys, name)

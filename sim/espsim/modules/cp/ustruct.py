# MicroPython's u-prefixed name of struct, for device libraries that import it (usocket.py).
from struct import *  # noqa: F403

# MicroPython's u-prefixed name of binascii, for device libraries that import it (usocket.py).
from binascii import *  # noqa: F403

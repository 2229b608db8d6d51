# MicroPython's u-prefixed name of socket (which MicroPython still accepts for its built-in
# modules), for device libraries written for it (micropython-lib's umqtt.simple 1.3: `import
# usocket as socket`) run under CPython in the simulator.
from socket import *  # noqa: F403

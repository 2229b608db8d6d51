# ota.state: the device's small state files (the resume offset of an interrupted download, the
# builds it rolled back from, the highest manifest sequence installed), as JSON objects.
#
# Where: relative names are taken from ROOT, the filesystem's root, never from the current
# directory: "/" on a board (the esp32 port mounts its filesystem at "/" and starts there);
# elsewhere (MicroPython's unix port, CPython: the simulator and the tests) the directory the
# process was in when ota.state was first imported, which the simulator makes the board's
# filesystem (`mpota sim run --fs DIR` starts the device in DIR).
#
# Power cuts: write() puts the new content in "<name>.tmp", then renames it over the old file.
# On littlefs (the esp32 port's "vfs" partition) a rename over a file is one atomic commit; on
# FAT ("ffat") MicroPython removes the old file and then renames, so a cut in between leaves only
# the complete .tmp file, which read() then takes. A cut while the .tmp file is written leaves the
# old file as it was. Either way at most the last update is lost.
#
# Bad content: read() returns None for a file that is missing, unreadable, larger than `limit`,
# not JSON or not a JSON object; each caller checks the fields it uses and ignores the rest, and
# the next write() replaces the file.

import json
import os
import sys

ROOT = "/" if sys.platform == "esp32" else os.getcwd()
_LIMIT = 2048  # bytes: a state file is small; a larger one is not ours


# The path of a state file: `name` under ROOT unless it is absolute.
def path(name):
    if name.startswith("/"):
        return name
    return ROOT.rstrip("/") + "/" + name


def _load(p, limit):
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    try:
        v = json.loads(data)
    except (ValueError, UnicodeError):
        return None
    return v if isinstance(v, dict) else None


# The JSON object in the file `name`, or in its .tmp file when the file itself is missing or
# broken; None when neither makes sense.
def read(name, limit=_LIMIT):
    p = path(name)
    v = _load(p, limit)
    if v is None:
        v = _load(p + ".tmp", limit)
    return v


def write(name, value):
    p = path(name)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(value))
    try:
        os.rename(tmp, p)
    except OSError:
        # A rename that cannot replace the file: drop the old one first (the .tmp file holds
        # the new content meanwhile, and read() finds it).
        _remove(p)
        os.rename(tmp, p)


def _remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


# Delete the file (its .tmp first, so that no older content comes back).
def forget(name):
    p = path(name)
    _remove(p + ".tmp")
    _remove(p)

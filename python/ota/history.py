# ota.history: what this device remembers across reboots and power cuts, in one state file
# (ota/state.py), "ota_history.json":
#   "trial":       {"slot", "build", "seq"}: the image the last update made the boot partition
#                  (its build id, and the otadata record's seq that set_boot() wrote for it);
#   "rolled_back": build ids (app_elf_sha256) of firmware this device rolled back from, the
#                  latest _KEEP of them: ota.update refuses them unless force=True;
#   "sequence":    the highest manifest "sequence" installed (written after set_boot());
#   "releases":    [build id, release version] of the latest _KEEP builds installed from a
#                  manifest whose "version" is the user's own (mpota manifest --version), so
#                  that the next release is compared with it (ota/policy.py).
#
# A build is "rolled back from" when the slot of the trial ends ABORTED (it never confirmed
# itself, and the bootloader went back) or INVALID, with the same image and the same otadata
# record: a slot merely overwritten later, or an image written but never set as boot, does not
# count. notice() looks, and is called by ota.status.slots() (so status()), by ota.update before
# a download, and by ota.writer.OTA before it erases the spare slot.

from . import state

FILE = "ota_history.json"
_KEEP = 8
_MAX_VERSION = 64  # characters of a release version kept
_INVALID = 3
_ABORTED = 4


# The file's content, each field checked: what does not make sense is left out.
def load():
    h = state.read(FILE) or {}
    out = {"rolled_back": [], "trial": None, "sequence": None, "releases": []}
    rb = h.get("rolled_back")
    if isinstance(rb, list):
        out["rolled_back"] = [b for b in rb if _is_build(b)][-_KEEP:]
    t = h.get("trial")
    if (
        isinstance(t, dict)
        and isinstance(t.get("slot"), str)
        and _is_build(t.get("build"))
        and _is_int(t.get("seq"))
    ):
        out["trial"] = {"slot": t["slot"], "build": t["build"], "seq": t["seq"]}
    if _is_int(h.get("sequence")):
        out["sequence"] = h["sequence"]
    rel = h.get("releases")
    if isinstance(rel, list):
        out["releases"] = [
            r
            for r in rel
            if isinstance(r, list) and len(r) == 2 and _is_build(r[0]) and _is_version(r[1])
        ][-_KEEP:]
    return out


def _is_version(v):
    return isinstance(v, str) and 0 < len(v) <= _MAX_VERSION


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_build(b):
    return (
        isinstance(b, str) and len(b) == 64 and not [c for c in b if c not in "0123456789abcdef"]
    )


def _save(h):
    try:
        state.write(FILE, h)
    except OSError as e:
        print("ota: cannot write %s: %s" % (state.path(FILE), e))


def _slot_build(part):
    from . import identity

    head = bytearray(288)
    part.readblocks(0, head)
    return identity.build_id(head)


# Look at the slot of the last trial: if it ended ABORTED or INVALID with that very image and
# otadata record, remember its build as rolled back. Returns the history.
def notice():
    h = load()
    t = h["trial"]
    if not t:
        return h
    from . import _otadata

    for p in _otadata.ota_partitions():
        info = p.info()
        if info[4] != t["slot"]:
            continue
        rec = _otadata.record(info)
        if rec and rec[0] == t["seq"] and rec[1] in (_ABORTED, _INVALID):
            if _slot_build(p) == t["build"]:
                if t["build"] not in h["rolled_back"]:
                    h["rolled_back"] = (h["rolled_back"] + [t["build"]])[-_KEEP:]
                h["trial"] = None
                _save(h)
    return h


# set_boot() made `part` the boot partition: remember the trial (a build installed again, with
# force=True, is no longer counted as rolled back until it rolls back again).
def booted(part):
    from . import _otadata

    build = _slot_build(part)
    rec = _otadata.record(part.info())
    h = notice()
    if build in h["rolled_back"]:
        h["rolled_back"].remove(build)
    h["trial"] = {"slot": part.info()[4], "build": build, "seq": rec[0]} if build and rec else None
    _save(h)


def rolled_back(build):
    return bool(build) and build in notice()["rolled_back"]


def set_sequence(seq):
    h = load()
    if h["sequence"] is None or seq > h["sequence"]:
        h["sequence"] = seq
        _save(h)


# The release version this device installed `build` as, or None.
def release(build):
    for b, v in load()["releases"]:
        if b == build:
            return v
    return None


# The last update's image (the trial) was installed as release `version`.
def set_release(version):
    h = load()
    t = h["trial"]
    if not t or not _is_version(version):
        return
    rel = [r for r in h["releases"] if r[0] != t["build"]]
    h["releases"] = (rel + [[t["build"], version]])[-_KEEP:]
    _save(h)

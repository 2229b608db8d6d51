# ota.status: what the device is running, what it will boot, its partition table, and the state
# and firmware version of each OTA slot.

from esp32 import Partition

from . import _backend, _otadata, ready

_APP = {0: "factory", 0x20: "test"}
_DATA = {
    0: "ota",
    1: "phy",
    2: "nvs",
    3: "coredump",
    4: "nvs_keys",
    5: "efuse",
    6: "undefined",
    0x80: "esphttpd",
    0x81: "fat",
    0x82: "spiffs",
    0x83: "littlefs",
}


def _subtype(ptype, sub):
    if ptype == 0:
        if 0x10 <= sub < 0x20:
            return "ota_%d" % (sub - 0x10)
        return _APP.get(sub, "0x%02x" % sub)
    if ptype == 1:
        return _DATA.get(sub, "0x%02x" % sub)
    return "0x%02x" % sub


def partition_table():
    parts = [p.info() for p in Partition.find(Partition.TYPE_APP)]
    parts.extend([p.info() for p in Partition.find(Partition.TYPE_DATA)])
    parts.sort(key=lambda i: i[2])
    lines = ["Partition table:", "# Name       Type     SubType      Offset       Size (bytes)"]
    for t, st, addr, size, label, _ in parts:
        lines.append(
            "  {:10s} {:8s} {:8} {:#10x} {:#10x} {:10,}".format(
                label,
                ("app", "data")[t] if t < 2 else "0x%02x" % t,
                _subtype(t, st),
                addr,
                size,
                size,
            )
        )
    return lines


def _fs_label():
    for label in ("vfs", "ffat"):
        if Partition.find(Partition.TYPE_DATA, label=label):
            return label
    return None


# (version, project, date, time, idf_ver, build id) named by firmware identity (ota/identity.py):
# MicroPython's version where the app description has none.
def _describe(be, part, running):
    from . import identity

    d = be.describe(part)
    i = identity.of_partition(part, be, running) if d else None
    if not i:
        return d
    project = d[1] or ("MicroPython" if i["source"] != "app" else "")
    return (i["version"] or "", project, d[2], d[3], d[4], i["build"])


def slots(backend=None):
    # [(label, state name, (version, project, date, time, idf_ver, build) or None, running,
    #   boot)]
    be = _backend.get(backend)
    running = Partition(Partition.RUNNING).info()[2]
    try:
        boot = Partition(Partition.BOOT).info()[2]
    except OSError:
        boot = running
    out = []
    for p in _otadata.ota_partitions():
        info = p.info()
        st = be.state(p)
        out.append(
            (
                info[4],
                "-" if st is None else _otadata.NAMES.get(st, "0x%x" % st),
                _describe(be, p, info[2] == running),
                info[2] == running,
                info[2] == boot,
            )
        )
    return out


def status():
    running = Partition(Partition.RUNNING)
    print("Micropython firmware is loading from partition '%s'." % running.info()[4])
    if ready():
        print("The next OTA partition is '%s'." % running.get_next_update().info()[4])
    else:
        print("The bootloader does not support OTA.")
    fs = _fs_label()
    if fs:
        print("The / filesystem is mounted from partition '%s'." % fs)
    else:
        print("No / filesystem partition (vfs or ffat) was found.")
    print("\n".join(partition_table()))
    sl = slots()
    if sl:
        print("OTA slots:")
        print("# Name       State            Firmware")
        for label, st, desc, is_running, is_boot in sl:
            fw = "%s %s (%s %s)" % (desc[1], desc[0], desc[2], desc[3]) if desc else "(no app)"
            tags = ("  [running]" if is_running else "") + ("  [next boot]" if is_boot else "")
            print("  {:10s} {:16s} {}{}".format(label, st, fw, tags))

# ota.status: what the device is running, what it will boot, its partition table, and the state
# and firmware version of each OTA slot.

import binascii
import struct

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
    from . import history

    history.notice()  # a slot that rolled back is remembered (ota/history.py)
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
        from . import history

        print("OTA slots:")
        print("# Name       State            Firmware")
        for label, st, desc, is_running, is_boot in sl:
            fw = "(no app)"
            if desc:
                fw = "%s %s (%s %s)" % (desc[1], desc[0], desc[2], desc[3])
                if len(desc) > 5 and desc[5]:
                    rel = history.release(desc[5])
                    fw += (" release %s" % rel if rel else "") + " build %s" % desc[5][:8]
            tags = ("  [running]" if is_running else "") + ("  [next boot]" if is_boot else "")
            print("  {:10s} {:16s} {}{}".format(label, st, fw, tags))


# The helpers of the original project's ota.status (glenn20/micropython-esp32-ota v0.3), with its
# names, return values and printed output: current_ota and next_ota are esp32.Partition objects
# (next_ota is None without a spare OTA partition), set when the module is imported.
OTA_UNSUPPORTED = -261  # ESP_ERR_NOT_FOUND
otastate = {
    0: "NEW",
    1: "PENDING",
    2: "VALID",
    3: "INVALID",
    4: "ABORTED",
    0xFFFFFFFF: "UNDEFINED",
}
otadata_part = (Partition.find(Partition.TYPE_DATA, 0) or [None])[0]
current_ota = Partition(Partition.RUNNING)  # the partition this firmware booted from
next_ota = None  # the partition the next update writes
if ready():  # and not the running one (v0.3 took whatever get_next_update() returned)
    next_ota = current_ota.get_next_update()


# The partition esp_ota_get_boot_partition() names (otadata's choice), else the running one.
def boot_ota():
    if otadata_part:
        try:
            return Partition(Partition.BOOT)
        except OSError:
            pass
    return Partition(Partition.RUNNING)


# The OTA app partitions, sorted by subtype: ota_0, ota_1, ...
def ota_partitions():
    return _otadata.ota_partitions()


def partition_table_print():
    print("\n".join(partition_table()))


# Print both otadata records and the partition the bootloader will start on the next boot.
# v0.3 took only VALID records as live. ESP-IDF's bootloader (bootloader_common_ota_select_valid)
# takes any record whose seq is not 0xFFFFFFFF, whose CRC matches and whose state is not INVALID
# or ABORTED; with rollback enabled (MicroPython's OTA boards: sdkconfig.ota) it first turns a
# PENDING_VERIFY record into ABORTED (that app did not confirm itself) and then a selected NEW one
# into PENDING_VERIFY: "Will be updated on next boot." marks those. With no live record it boots
# factory, else ota_0.
def otadata_check():
    if not otadata_part:
        return
    recs = []
    buf = bytearray(32)
    for i in (0, 1):
        otadata_part.readblocks(i, buf)
        seq, _, st, crc = struct.unpack("<I20sII", buf)
        ok = crc == binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF
        recs.append((seq, st, crc, ok and seq != 0xFFFFFFFF and st not in (3, 4)))
    live = [r for r in recs if r[3] and r[1] != 1]
    best = max(live, key=lambda r: r[0]) if live else None
    for r in recs:
        seq, st, crc, is_valid = r
        state = otastate.get(st, "0x%x" % st)
        print("OTA record: state=%s, seq=%d, crc=%d, valid=%s" % (state, seq, crc, is_valid))
        changes = is_valid and (st == 1 or (st == 0 and r is best))
        print("OTA record is %s." % state + (" Will be updated on next boot." if changes else ""))
    p = ota_partitions()
    factory = Partition.find(Partition.TYPE_APP, 0)
    if best and p:
        nxt = p[((best[0] - 1) & 0xFFFFFFFF) % len(p)]
    else:
        nxt = factory[0] if factory else (p[0] if p else None)
    if nxt:
        print("Next boot is '%s'." % nxt.info()[4])


# Reboot after `delay` seconds (ctrl-C cancels).
def ota_reboot(delay=10):
    from .writer import reboot

    reboot(delay)


# Set the previous OTA partition (before the running one, wrapping round) as the boot partition,
# after esp32's set_boot() has verified its image (OSError(-5379) if it is not valid); reboot if
# asked. OSError(-261) if the running firmware is not in an OTA partition.
def force_rollback(reboot=False):
    parts = ota_partitions()
    for i, p in enumerate(parts):
        if p.info()[2] == current_ota.info()[2]:
            parts[i - 1].set_boot()
            if reboot:
                ota_reboot()
            return
    raise OSError(OTA_UNSUPPORTED, "ESP_ERR_NOT_FOUND: the running firmware is not in an OTA slot")

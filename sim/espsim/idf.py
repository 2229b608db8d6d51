# The app-side ESP-IDF OTA functions that MicroPython's esp32 module calls, with the behaviour of
# components/app_update/esp_ota_ops.c (v5.3-v5.5), over a simulated Device.
# Functions that return an esp_partition_t* return a Part or None; errors raise EspError.

from espsim import appimage, errors, otadata, parttable
from espsim.errors import EspError


def read_otadata(dev):
    p = dev.find_first(parttable.TYPE_DATA, parttable.SUBTYPE_DATA_OTA)
    if p is None:
        return None, None
    e0 = otadata.Entry.unpack(dev.part_read(p, 0, otadata.ENTRY_SIZE))
    e1 = otadata.Entry.unpack(dev.part_read(p, 4096, otadata.ENTRY_SIZE))
    return p, [e0, e1]


def app_partition_count(dev):
    n = 0
    while dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_OTA_0 + n) is not None:
        n += 1
    return n


def _ota_slot_part(dev, seq, count):
    # (ota_seq - 1) % count on uint32_t, as the C code computes it
    slot = ((seq - 1) & 0xFFFFFFFF) % count
    return dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_OTA_0 + slot)


def find_default_boot_partition(dev):
    p = dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_FACTORY)
    if p is not None:
        return p
    for st in range(parttable.SUBTYPE_OTA_0, parttable.SUBTYPE_OTA_MAX):
        p = dev.find_first(parttable.TYPE_APP, st)
        if p is not None:
            return p
    return dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_TEST)


def get_boot_partition(dev):
    odp, ent = read_otadata(dev)
    if odp is None:
        return None
    count = app_partition_count(dev)
    if (ent[0].invalid() and ent[1].invalid()) or count == 0:
        return find_default_boot_partition(dev)
    a = otadata.active(ent)
    if a == -1:
        return find_default_boot_partition(dev)
    return _ota_slot_part(dev, ent[a].seq, count)


def get_running_partition(dev):
    return dev.running()


def get_next_update_partition(dev, start=None):
    if start is None:
        start = dev.running()
    default = None
    next_is_result = False
    for st in range(parttable.SUBTYPE_OTA_0, parttable.SUBTYPE_OTA_MAX):
        p = dev.find_first(parttable.TYPE_APP, st)
        if p is None:
            continue
        if default is None:
            default = p
        if p is start:
            next_is_result = True
        elif next_is_result:
            return p
    return default


def image_validate(dev, part):
    try:
        return appimage.verify(
            dev.flash.read, part.address, part.size, dev.flash.size, dev.chip, dev.chip_rev
        )
    except EspError as e:
        raise EspError(errors.ESP_ERR_OTA_VALIDATE_FAILED, e.detail)


def _new_state(dev):
    return otadata.NEW if dev.rollback else otadata.UNDEFINED


def rewrite_ota_seq(dev, entries, seq, sec_id, odp):
    e = entries[sec_id]
    e.seq = seq
    e.crc = otadata.crc(seq)
    dev.part_erase(odp, sec_id * 4096, 4096)
    dev.part_write(odp, sec_id * 4096, e.pack())


def rewrite_ota_data(dev, subtype):
    odp, ent = read_otadata(dev)
    if odp is None:
        raise EspError(errors.ESP_ERR_NOT_FOUND)
    count = app_partition_count(dev)
    sid = subtype & 0x0F
    if sid >= count:
        raise EspError(errors.ESP_ERR_INVALID_ARG)
    a = otadata.active(ent)
    if a != -1:
        seq = ent[a].seq
        i = 0
        while seq > (sid + 1) % count + i * count:
            i += 1
        nxt = (~a) & 1
        ent[nxt].state = _new_state(dev)
        rewrite_ota_seq(dev, ent, (sid + 1) % count + i * count, nxt, odp)
    else:
        ent[0].state = _new_state(dev)
        rewrite_ota_seq(dev, ent, sid + 1, 0, odp)


def set_boot_partition(dev, part):
    if part is None:
        raise EspError(errors.ESP_ERR_INVALID_ARG)
    image_validate(dev, part)
    if part.type != parttable.TYPE_APP:
        raise EspError(errors.ESP_ERR_INVALID_ARG)
    if part.subtype == parttable.SUBTYPE_FACTORY:
        odp = dev.find_first(parttable.TYPE_DATA, parttable.SUBTYPE_DATA_OTA)
        if odp is None:
            raise EspError(errors.ESP_ERR_NOT_FOUND)
        dev.part_erase(odp, 0, odp.size)
        return
    rewrite_ota_data(dev, part.subtype)


def check_rollback_is_possible(dev):
    odp, ent = read_otadata(dev)
    if odp is None:
        return False
    count = app_partition_count(dev)
    if count == 0:
        return False
    valid = [ent[0].valid(), ent[1].valid()]
    a = otadata.select(ent, valid, True)
    if a == -1:
        return False
    last = (~a) & 1
    if valid[last]:
        p = _ota_slot_part(dev, ent[last].seq, count)
    else:
        p = dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_FACTORY)
    if p is None:
        return False
    try:
        image_validate(dev, p)
        return True
    except EspError:
        return False


def _current_ota_is_workable(dev, valid):
    odp, ent = read_otadata(dev)
    if odp is None:
        raise EspError(errors.ESP_ERR_NOT_FOUND)
    a = otadata.active(ent)
    if a != -1 and app_partition_count(dev) != 0:
        if valid and ent[a].state != otadata.VALID:
            ent[a].state = otadata.VALID
            rewrite_ota_seq(dev, ent, ent[a].seq, a, odp)
        elif not valid:
            if not check_rollback_is_possible(dev):
                raise EspError(errors.ESP_ERR_OTA_ROLLBACK_FAILED)
            ent[a].state = otadata.INVALID
            rewrite_ota_seq(dev, ent, ent[a].seq, a, odp)
    else:
        raise EspError(errors.ESP_FAIL, "Running firmware is factory")


def mark_app_valid_cancel_rollback(dev):
    _current_ota_is_workable(dev, True)


def mark_app_invalid_rollback(dev):
    _current_ota_is_workable(dev, False)


def get_state_partition(dev, part):
    if part is None:
        raise EspError(errors.ESP_ERR_INVALID_ARG)
    if not part.is_ota():
        raise EspError(errors.ESP_ERR_NOT_SUPPORTED)
    count = app_partition_count(dev)
    odp, ent = read_otadata(dev)
    if odp is None or count == 0:
        raise EspError(errors.ESP_ERR_NOT_FOUND)
    req = part.subtype - parttable.SUBTYPE_OTA_0
    for e in ent:
        if ((e.seq - 1) & 0xFFFFFFFF) % count == req and e.crc_ok():
            return e.state
    raise EspError(errors.ESP_ERR_NOT_FOUND)


def get_partition_description(dev, part):
    if part is None:
        raise EspError(errors.ESP_ERR_INVALID_ARG)
    if part.type != parttable.TYPE_APP:
        raise EspError(errors.ESP_ERR_NOT_SUPPORTED)
    d = appimage.app_desc(dev.part_read(part, 32, 256))
    if d is None:
        raise EspError(errors.ESP_ERR_NOT_FOUND)
    return d

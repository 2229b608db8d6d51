# The ESP-IDF 2nd stage bootloader's choice of app on each boot
# (components/bootloader_support/src/bootloader_utility.c, v5.3-v5.5, without anti-rollback,
# secure boot or flash encryption):
# 1. verify the partition table at 0x8000 (esp_partition_table_verify(): the MD5 entry, and no
#    partition past the flash size the bootloader's own image header states, which
#    update_flash_config() of bootloader_<chip>.c gives the ROM's flash driver);
# 2. with rollback enabled, turn a PENDING_VERIFY otadata entry into ABORTED (the app did not
#    confirm itself during its first boot), and a selected NEW entry into PENDING_VERIFY;
# 3. boot ota_[(max valid seq - 1) % app_count], or factory / ota_0 when otadata holds nothing;
# 4. if that image does not load (esp_image_verify + load address checks for the chip, skipping
#    segments it does not load such as esptool's padding), try the slots below
#    it down to factory, then the slots above it, then test; none: the chip resets forever.

from espsim import appimage, otadata, parttable
from espsim.errors import EspError

FACTORY_INDEX = -1
TEST_APP_INDEX = -2


class Bricked(Exception):
    # No app can boot: a real ESP32 would print the reason and reset in a loop.
    pass


class _State:
    def __init__(self, parts):
        self.factory = None
        self.test = None
        self.ota = [None] * 16
        self.app_count = 0
        self.ota_info = None
        for p in parts:
            if p.type == parttable.TYPE_APP:
                if p.subtype == parttable.SUBTYPE_FACTORY:
                    self.factory = p
                elif p.subtype == parttable.SUBTYPE_TEST:
                    self.test = p
                elif p.subtype & 0xF0 == 0x10:
                    self.ota[p.subtype & 0x0F] = p
                    self.app_count += 1
            elif p.type == parttable.TYPE_DATA and p.subtype == parttable.SUBTYPE_DATA_OTA:
                self.ota_info = p

    def index_to_partition(self, i):
        if i == FACTORY_INDEX:
            return self.factory
        if i == TEST_APP_INDEX:
            return self.test
        if 0 <= i < self.app_count:
            return self.ota[i]
        return None


def _write_otadata(dev, bs, i, entry):
    addr = bs.ota_info.address + 4096 * i
    dev.flash.erase_sector(addr)
    dev.flash.program(addr, entry.pack())


def _read_otadata(dev, bs):
    a = bs.ota_info.address
    return [
        otadata.Entry.unpack(dev.flash.read(a, otadata.ENTRY_SIZE)),
        otadata.Entry.unpack(dev.flash.read(a + 4096, otadata.ENTRY_SIZE)),
    ]


def _select(dev, bs, log):
    # bootloader_utility_get_selected_boot_partition()
    if bs.ota_info is None:
        return FACTORY_INDEX, False
    ent = _read_otadata(dev, bs)
    initial = False
    if dev.rollback:
        for i in (0, 1):
            if ent[i].state == otadata.PENDING_VERIFY:
                log.append("boot: otadata[%d] was not confirmed: PENDING_VERIFY -> ABORTED" % i)
                ent[i].state = otadata.ABORTED
                _write_otadata(dev, bs, i, ent[i])
    if (ent[0].invalid() and ent[1].invalid()) or bs.app_count == 0:
        if bs.factory is not None:
            log.append("boot: Defaulting to factory image")
            return FACTORY_INDEX, False
        log.append("boot: No factory image, trying OTA 0")
        if (ent[0].seq == 0xFFFFFFFF or not ent[0].crc_ok()) and (
            ent[1].seq == 0xFFFFFFFF or not ent[1].crc_ok()
        ):
            initial = True
        return 0, initial
    a = otadata.active(ent)
    if a == -1:
        log.append("boot: ota data partition invalid, falling back to factory")
        return FACTORY_INDEX, False
    index = ((ent[a].seq - 1) & 0xFFFFFFFF) % bs.app_count
    if dev.rollback and ent[a].state == otadata.NEW:
        log.append("boot: otadata[%d] is new: NEW -> PENDING_VERIFY" % a)
        ent[a].state = otadata.PENDING_VERIFY
        _write_otadata(dev, bs, a, ent[a])
    return index, False


def _try_load(dev, p, log):
    if p is None or p.size == 0:
        return False
    try:
        md = appimage.verify(
            dev.flash.read, p.address, p.size, dev.flash.size, dev.chip, dev.chip_rev
        )
        appimage.check_load_addresses(md)
    except EspError as e:
        log.append("esp_image: %s" % (e.detail or "invalid image"))
        log.append(
            "boot: Factory app partition is not bootable"
            if p.subtype == 0
            else "boot: OTA app partition slot %d is not bootable" % (p.subtype & 0x0F)
        )
        return False
    log.append("boot: Loaded app from partition at offset 0x%x" % p.address)
    return True


def _set_actual_ota_seq(dev, bs, index, initial, log):
    if index > FACTORY_INDEX and initial:
        e = otadata.Entry(index + 1, b"\xff" * 20, otadata.VALID)
        _write_otadata(dev, bs, 0, e)
        log.append("boot: Set actual ota_seq=%d in otadata[0]" % e.seq)


# esp_image_header_t.spi_size (the high nibble of byte 3) -> MB, as update_flash_config() of
# components/bootloader_support/src/<chip>/bootloader_<chip>.c reads it: 1-16 MB on every chip
# simulated here, anything else 2 MB (the S3's and C5's 32 MB and more are not simulated).
HEADER_FLASH_MB = {0: 1, 1: 2, 2: 4, 3: 8, 4: 16}


def header_flash_size(hdr_byte3):
    return HEADER_FLASH_MB.get(hdr_byte3 >> 4, 2) * 1024 * 1024


def boot(dev):
    # One power-on of the chip. Returns (partition, log lines); raises Bricked.
    log = []
    at = dev.chip.bootloader_offset
    if dev.flash.read(at, 1)[0] != appimage.HEADER_MAGIC:
        raise Bricked(
            "no 2nd stage bootloader at 0x%x, where the %s ROM looks (invalid header)"
            % (at, dev.chip.display)
        )
    chip_size = header_flash_size(dev.flash.read(at + 3, 1)[0])
    try:
        parts = parttable.parse(dev.flash.read(parttable.OFFSET, parttable.MAX_LEN), chip_size)
    except ValueError as e:
        raise Bricked("Failed to verify partition table: %s" % e)
    dev.parts = parts
    bs = _State(parts)
    start, initial = _select(dev, bs, log)
    order = []
    if start == TEST_APP_INDEX:
        order = [TEST_APP_INDEX]
    else:
        order = list(range(start, FACTORY_INDEX - 1, -1))
        order += list(range(start + 1, bs.app_count))
        order.append(TEST_APP_INDEX)
    for i in order:
        p = bs.index_to_partition(i)
        if p is None:
            continue
        if _try_load(dev, p, log):
            if i != TEST_APP_INDEX:
                _set_actual_ota_seq(dev, bs, i, initial, log)
            dev.state["running"] = p.address
            dev.state["boots"] += 1
            dev.save_state()
            return p, log
    dev.state["running"] = 0
    dev.save_state()
    raise Bricked("No bootable app partitions in the partition table\n" + "\n".join(log))

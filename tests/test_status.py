"""ota.status on partition tables other than the seed's: every subtype prints, numeric ones as
hex; the OTA slot lines show each slot's state and firmware."""

from conftest import FACTORY_ONLY, image

CSV = """\
nvs,      data, nvs,       0x9000,   0x5000,
otadata,  data, ota,       0xe000,   0x2000,
ota_0,    app,  ota_0,     0x10000,  0x100000,
ota_1,    app,  ota_1,     0x110000, 0x100000,
ota_2,    app,  ota_2,     0x210000, 0x100000,
spiffs,   data, spiffs,    0x310000, 0x40000,
lfs,      data, littlefs,  0x350000, 0x40000,
coredump, data, coredump,  0x390000, 0x10000,
keys,     data, nvs_keys,  0x3a0000, 0x1000,
undef,    data, undefined, 0x3a1000, 0x1000,
custom,   data, 0x40,      0x3a2000, 0x1000,
ffat,     data, fat,       0x3b0000, 0x50000,
"""


def test_status_with_every_subtype(make_sim):
    fw = image("v1.22.0", 900_000)
    build = fw[32 + 144 : 32 + 148].hex()  # app_elf_sha256, first 4 bytes
    sim = make_sim(CSV, fw)
    r = sim.run("from ota.status import status\nstatus()")
    lines = r.stdout.splitlines()
    assert lines[:3] == [
        "Micropython firmware is loading from partition 'ota_0'.",
        "The next OTA partition is 'ota_1'.",
        "The / filesystem is mounted from partition 'ffat'.",
    ]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[5:17]}
    assert rows == {
        "nvs": ["data", "nvs", "0x9000"],
        "otadata": ["data", "ota", "0xe000"],
        "ota_0": ["app", "ota_0", "0x10000"],
        "ota_1": ["app", "ota_1", "0x110000"],
        "ota_2": ["app", "ota_2", "0x210000"],
        "spiffs": ["data", "spiffs", "0x310000"],
        "lfs": ["data", "littlefs", "0x350000"],
        "coredump": ["data", "coredump", "0x390000"],
        "keys": ["data", "nvs_keys", "0x3a0000"],
        "undef": ["data", "undefined", "0x3a1000"],
        "custom": ["data", "0x40", "0x3a2000"],
        "ffat": ["data", "fat", "0x3b0000"],
    }
    assert lines[17:] == [
        "OTA slots:",
        "# Name       State            Firmware",
        "  ota_0      VALID            MicroPython v1.22.0 (Aug 13 2023 18:23:47) build "
        + build
        + "  [running]  [next boot]",
        "  ota_1      -                (no app)",
        "  ota_2      -                (no app)",
    ]


def test_status_on_a_factory_only_device(make_sim):
    sim = make_sim(FACTORY_ONLY)
    r = sim.run("from ota.status import status\nstatus()")
    assert r.stdout.splitlines()[:3] == [
        "Micropython firmware is loading from partition 'factory'.",
        "The bootloader does not support OTA.",
        "No / filesystem partition (vfs or ffat) was found.",
    ]
    assert "OTA slots" not in r.stdout

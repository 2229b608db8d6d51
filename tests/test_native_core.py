"""The C core of the native module over the host backend (tests/c/test_ota_core.c), built with
-Wall -Wextra -Werror, on fixtures made here: a simulated ESP32 and real ESP32 images."""

from pathlib import Path

import pytest
from conftest import build_c, c_test_names, image, run_c_test
from espsim import parttable
from mpota import images, simdev

BINARY = Path(__file__).resolve().parent.parent / "build" / "c" / "test_ota_core"
SLOT = 0x180000


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    build_c()
    d = tmp_path_factory.mktemp("c-fixtures")
    simdev.create(d / "flash.bin", image("v1.22.0", 1_400_000))
    new = image("v1.23.0", images.SEED_IMAGE_SIZE)
    files = {
        "new.bin": new,
        "small.bin": image("v1.23.1", 150_032),
        "s3.bin": image("v1.23.0", chip="esp32s3"),
        "bootloader.bin": images.bootloader_image(),
        "merged.bin": images.merged_firmware(new, parttable.build(parttable.seed_table())),
        "random.bin": bytes(range(256)) * 64,
        "table.bin": parttable.build(parttable.seed_table()),
        "short.bin": new[:200],
        "empty.bin": b"",
        "big.bin": image("v1.23.0", SLOT + 4096 * 3 + 16 * 7 + 32),
        "nodigest.bin": images.app_image("v1.23.2", size=100_000, digest=False),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("name", c_test_names(BINARY))
def test_c(fixtures, name):
    run_c_test(BINARY, fixtures, name)

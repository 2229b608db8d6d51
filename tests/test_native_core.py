"""The C core of the native module over the host backend (tests/c/test_ota_core.c), built with
-Wall -Wextra -Werror, on fixtures made here: a simulated ESP32 and real ESP32 images."""

import subprocess
from pathlib import Path

import pytest
from conftest import build_c, image
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


def c_tests() -> list[str]:
    build_c()
    return subprocess.run(
        [str(BINARY), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()


@pytest.mark.parametrize("name", c_tests())
def test_c(fixtures, name):
    r = subprocess.run(
        [str(BINARY), str(fixtures), name], capture_output=True, text=True, timeout=300
    )
    print(r.stdout)
    assert r.returncode == 0 and f"ok {name}" in r.stdout.splitlines(), r.stdout + r.stderr

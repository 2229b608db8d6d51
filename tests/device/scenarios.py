"""The device suite's scenarios, for any board of board.py. `image` is a firmware image the
board can run (on a real board: a micropython.bin built for it; on the simulator: a test
image)."""

from __future__ import annotations

import hashlib

from espsim import chips
from mpota import images, push

STATE = """
from esp32 import Partition
from ota import _otadata
run = Partition(Partition.RUNNING)
print(run.info()[4], Partition(Partition.BOOT).info()[4], _otadata.state(run.info()))
"""


def state(board) -> tuple[str, str, int | None]:
    running, boot, st = board.exec(STATE).split()
    return running, boot, None if st == "None" else int(st)


def confirm(board) -> None:
    board.exec("import ota\nota.stop_rollback()")


def two_updates_in_a_row(board, image: bytes) -> list[str]:
    """Update, reset, confirm; twice: the board ends in the slot it started from."""
    start, _, _ = state(board)
    seen = []
    for _ in range(2):
        before, _, _ = state(board)
        assert board.push(image) == hashlib.sha256(image).hexdigest()
        assert state(board)[1] != before, "the boot partition did not move"
        board.reset()
        running, _, st = state(board)
        assert running != before, f"still running {before} after the update"
        assert st in (1, None), f"new firmware in state {st}, not PENDING_VERIFY"
        confirm(board)
        assert state(board)[2] in (2, None)
        seen.append(running)
    assert seen[-1] == start
    return seen


def rollback_across_resets(board, image: bytes) -> None:
    """Update and reset without confirming: the next reset goes back to the old firmware."""
    start, _, _ = state(board)
    board.push(image)
    board.reset()
    assert state(board)[0] != start
    board.reset()  # never confirmed
    assert state(board)[0] == start, "no rollback to the firmware that was confirmed"
    confirm(board)


def bad_inputs(image: bytes) -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes pushed, the error message expected), for a board that runs `image`."""
    own = chips.BY_ID[int.from_bytes(image[12:14], "little")]
    other = chips.get("esp32c3" if own.name == "esp32s3" else "esp32s3")
    return {
        "bootloader": (images.bootloader_image(own.name), "This is a bootloader image"),
        "other chip": (
            images.app_image("v1.23.0", chip=other.name),
            f"Image is for {other.display}",
        ),
        "random bytes": (bytes(range(256)) * 64, "Not an ESP32 app image: it starts with 0x00"),
        "truncated": (image[: len(image) // 2], "ESP_ERR_OTA_VALIDATE_FAILED"),
    }


def bad_inputs_leave_the_boot_slot(board, image: bytes, backend=None) -> dict[str, str]:
    before = state(board)
    messages = {}
    for name, (data, expect) in bad_inputs(image).items():
        try:
            board.push(data, backend)
            raise AssertionError(f"{name}: accepted")
        except push.PushError as e:
            assert expect in str(e), f"{name}: {e}"
            messages[name] = str(e)
        assert state(board) == before, f"{name} changed the boot partition or states"
    return messages


def has_native(board) -> bool:
    return (
        board.exec("try:\n import _ota\n print(1)\nexcept ImportError:\n print(0)")[-2:].strip()
        == "1"
    )


def backends_agree(board, image: bytes) -> None:
    """Where the firmware has _ota: the same bad inputs give the same errors both ways."""
    native = bad_inputs_leave_the_boot_slot(board, image, "native")
    pure = bad_inputs_leave_the_boot_slot(board, image, "pure")
    assert native == pure

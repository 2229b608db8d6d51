# ota.rollback: confirm the running firmware, or go back to the previous one.

from esp32 import Partition

from . import _otadata

_ENOENT = 2


# Mark this boot as successful: no rollback to the previous firmware on the next reboot.
# Returns False (with a message) when the firmware or bootloader does not support OTA.
def cancel():
    try:
        Partition.mark_app_valid_cancel_rollback()
        return True
    except OSError as e:
        if e.args[0] == -261:  # ESP_ERR_NOT_FOUND: no otadata partition
            print("ota.rollback.cancel(): The bootloader does not support OTA rollback.")
            return False
        if e.args[0] == 1:  # ESP_FAIL: running a factory app, not an OTA slot
            print("ota.rollback.cancel(): The running firmware is not in an OTA partition.")
            return False
        raise


# Boot the previous OTA partition on the next reboot (its image is verified first:
# OSError(-5379) if it is not a valid image).
def force(reboot=False):
    running = Partition(Partition.RUNNING).info()
    parts = _otadata.ota_partitions()
    for i, p in enumerate(parts):
        if p.info()[2] == running[2] and len(parts) > 1:
            parts[i - 1].set_boot()
            if reboot:
                from .writer import reboot as _reboot

                _reboot()
            return parts[i - 1].info()[4]
    raise OSError(_ENOENT, "No previous OTA partition to roll back to.")


# Undo force(): boot the running partition again on the next reboot. set_boot()
# (esp_ota_set_boot_partition) records it as NEW, a trial boot that rolls back unless confirmed;
# a firmware that was confirmed (VALID) is confirmed again, as it was
# (esp_ota_mark_app_valid_cancel_rollback marks the record just written). One still on trial
# (PENDING_VERIFY) gets a new trial boot: otadata has no way to write PENDING_VERIFY back.
def cancel_force():
    running = Partition(Partition.RUNNING)
    was = _otadata.state(running.info())
    running.set_boot()
    if was == _otadata.VALID:
        Partition.mark_app_valid_cancel_rollback()

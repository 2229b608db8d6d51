# ota: MicroPython firmware updates over the air for ESP32.
# MIT license. The API follows glenn20/micropython-esp32-ota (ota.ready, ota.stop_rollback,
# ota.status, ota.writer.OTA, ota.rollback).

from esp32 import Partition


# True when this device can take an OTA update: its partition table has an otadata partition
# and a spare OTA app partition that is not the running one.
def ready():
    try:
        if not Partition.find(Partition.TYPE_DATA, 0):  # the otadata partition
            return False
        running = Partition(Partition.RUNNING)
        return running.get_next_update().info()[2] != running.info()[2]
    except OSError:
        return False


# Mark the running firmware as good: the bootloader will not roll back to the previous one.
# Raises OSError(-261) if the partition table has no otadata partition.
def stop_rollback():
    Partition.mark_app_valid_cancel_rollback()


# Which backend OTA() uses by default here: "native" (the _ota C module in this firmware) or
# "pure" (esp32.Partition and hashlib).
def backend():
    from . import _backend

    return _backend.get().name

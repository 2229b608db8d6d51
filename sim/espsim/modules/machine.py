# The simulated device's `machine` module. machine.reset() is a hard reset: the simulated
# bootloader runs on the flash image (slot selection, rollback), records which app it started,
# prints its log, and this process (the firmware that was running) ends, as it would on a board.
# The next process started with the same $ESPSIM_FLASH runs as the newly booted firmware.
# The process ends by raising HardReset (a SystemExit: its status is 0, or 3 when no app boots),
# which simboot tells apart from the soft reset that a plain SystemExit is.

from espsim import bootloader, device

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class HardReset(SystemExit):
    pass


def reset():
    dev = device.current()
    print()
    print("espsim: hard reset")
    try:
        part, log = bootloader.boot(dev)
    except bootloader.Bricked as e:
        print("espsim: the device does not boot: %s" % e)
        raise HardReset(3)
    for line in log:
        print("espsim: " + line)
    print("espsim: running '%s' at 0x%x" % (part.label, part.address))
    raise HardReset(0)


def reset_cause():
    return PWRON_RESET if device.current().state["boots"] <= 1 else HARD_RESET


# The chip's base MAC address (6 bytes), as the esp32 port's unique_id() returns it: each
# simulated device has its own (`mpota sim create --mac`, else derived from its flash file).
def unique_id():
    return device.current().unique_id()


def soft_reset():
    raise SystemExit

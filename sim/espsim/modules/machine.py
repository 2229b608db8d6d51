# The simulated device's `machine` module. machine.reset() is a hard reset: the simulated
# bootloader runs on the flash image (slot selection, rollback), records which app it started,
# prints its log, and this process (the firmware that was running) ends, as it would on a board.
# The next process started with the same $ESPSIM_FLASH runs as the newly booted firmware.

import sys

from espsim import bootloader, device

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def reset():
    dev = device.current()
    print()
    print("espsim: hard reset")
    try:
        part, log = bootloader.boot(dev)
    except bootloader.Bricked as e:
        print("espsim: the device does not boot: %s" % e)
        sys.exit(3)
    for line in log:
        print("espsim: " + line)
    print("espsim: running '%s' at 0x%x" % (part.label, part.address))
    sys.exit(0)


def reset_cause():
    return PWRON_RESET if device.current().state["boots"] <= 1 else HARD_RESET


def soft_reset():
    raise SystemExit

# Freeze the ota package into a MicroPython firmware:
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=/path/to/this/manifest.py
# (or include("/path/to/this/manifest.py") from your board's manifest).
metadata(
    version="0.1.0",
    description="Firmware updates over the air for MicroPython on ESP32.",
    license="MIT",
)

package("ota")

# espsim: a simulated ESP32 (flash, ESP-IDF OTA semantics and bootloader) for MicroPython's
# unix port and CPython. Everything here runs under both interpreters.
#
# Layout of the simulated device:
#   <flash>         the raw flash image (default 4 MB), exactly as esptool would read it back
#   <flash>.state   key=value lines the simulated chip keeps outside flash (which slot is running,
#                   chip model and revision, whether the bootloader supports rollback)
# The device modules (esp32, machine, ...) are in espsim/modules; put that directory first on
# MICROPYPATH / sys.path and set ESPSIM_FLASH to the flash image.

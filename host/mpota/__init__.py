"""mpota: host tools and ESP32 simulator for MicroPython OTA firmware updates."""

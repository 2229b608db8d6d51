# The _ota module for make-based MicroPython ports (the unix port): the binding, the core, and
# the host backend in place of ESP-IDF, over the simulator's flash file ($ESPSIM_FLASH).
#   make -C ports/unix USER_C_MODULES=/path/to/this/repo/usermod
OTA_NATIVE_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(OTA_NATIVE_DIR)/modota.c
SRC_USERMOD_LIB_C += $(OTA_NATIVE_DIR)/ota_core.c
SRC_USERMOD_LIB_C += $(OTA_NATIVE_DIR)/ota_delta.c
SRC_USERMOD_LIB_C += $(OTA_NATIVE_DIR)/ota_sha256.c
SRC_USERMOD_LIB_C += $(OTA_NATIVE_DIR)/ota_sig.c
SRC_USERMOD_LIB_C += $(addprefix $(OTA_NATIVE_DIR)/host/,ota_host.c soc_host.c \
	flash_host.c esp_partition_host.c esp_image_format_host.c app_update_host.c)

CFLAGS_USERMOD += -I$(OTA_NATIVE_DIR) -I$(OTA_NATIVE_DIR)/host/include -I$(OTA_NATIVE_DIR)/host
CFLAGS_USERMOD += -DOTA_HOST_BACKEND=1

# mbedtls: MicroPython's own copy when the port builds it (MICROPY_SSL_MBEDTLS=1), else the
# system's (Debian: libmbedtls-dev).
ifneq ($(MICROPY_SSL_MBEDTLS),1)
LDFLAGS_USERMOD += -lmbedcrypto
endif

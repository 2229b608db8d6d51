// Host stand-in for ESP-IDF's esp_err.h: the error type and the codes the OTA core and the
// host backend use, with ESP-IDF's values (components/esp_common/include/esp_err.h).
#ifndef OTA_HOST_ESP_ERR_H
#define OTA_HOST_ESP_ERR_H

#include <stdint.h>

typedef int esp_err_t;

#define ESP_OK 0
#define ESP_FAIL -1
#define ESP_ERR_NO_MEM 0x101
#define ESP_ERR_INVALID_ARG 0x102
#define ESP_ERR_INVALID_STATE 0x103
#define ESP_ERR_INVALID_SIZE 0x104
#define ESP_ERR_NOT_FOUND 0x105
#define ESP_ERR_NOT_SUPPORTED 0x106
#define ESP_ERR_TIMEOUT 0x107
#define ESP_ERR_NOT_ALLOWED 0x10B
#define ESP_ERR_FLASH_BASE 0x6000
#define ESP_ERR_FLASH_OP_FAIL (ESP_ERR_FLASH_BASE + 1)

const char *esp_err_to_name(esp_err_t code);

#endif

// Host stand-in for ESP-IDF's esp_image_format.h (components/bootloader_support): an app
// image's metadata as esp_image_get_metadata() fills it (implemented in
// ../esp_image_format_host.c), with esp_partition_pos_t of esp_flash_partitions.h.
#ifndef OTA_HOST_ESP_IMAGE_FORMAT_H
#define OTA_HOST_ESP_IMAGE_FORMAT_H

#include <stdint.h>
#include "esp_app_format.h"
#include "esp_err.h"

#define ESP_IMAGE_HASH_LEN 32

typedef struct {
    uint32_t offset;
    uint32_t size;
} esp_partition_pos_t;

typedef struct {
    uint32_t start_addr; // of the image on flash
    esp_image_header_t image;
    esp_image_segment_header_t segments[ESP_IMAGE_MAX_SEGMENTS];
    uint32_t segment_data[ESP_IMAGE_MAX_SEGMENTS]; // flash address of each segment's data
    uint32_t image_len; // bytes on flash, the appended digest included
    uint8_t image_digest[32]; // the appended SHA-256, as on flash
    uint32_t secure_version;
    uint32_t mmu_page_size; // (v5.5)
} esp_image_metadata_t;

// The image's header, segment headers and appended digest, read from flash and not checked:
// no data is read, no checksum or hash computed.
esp_err_t esp_image_get_metadata(const esp_partition_pos_t *part, esp_image_metadata_t *metadata);

#endif

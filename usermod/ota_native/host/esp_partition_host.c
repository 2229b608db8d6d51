// The partition table and esp_partition_*, as ESP-IDF's components/esp_partition (partition.c,
// partition_target.c) has them, v5.3-v5.5: the table is read on first use. Uses flash_host.c
// (the device and its flash) only.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_partition.h"
#include "esp_partition_host.h"
#include "flash_host.h"
#include "mbedtls/md5.h"

#define PT_OFFSET (0x8000u)
#define PT_MAX_LEN (0xC00u)
#define MAX_PARTS (PT_MAX_LEN / 32)

static esp_partition_t parts[MAX_PARTS];
static int nparts;
static bool loaded;

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define MD5_STARTS mbedtls_md5_starts
#define MD5_UPDATE mbedtls_md5_update
#define MD5_FINISH mbedtls_md5_finish
#else
#define MD5_STARTS mbedtls_md5_starts_ret
#define MD5_UPDATE mbedtls_md5_update_ret
#define MD5_FINISH mbedtls_md5_finish_ret
#endif

// load_partitions() of components/esp_partition/partition.c, with CONFIG_PARTITION_TABLE_MD5
esp_err_t host_partitions_load(void) {
    uint8_t table[PT_MAX_LEN];
    esp_err_t err = host_flash_read(PT_OFFSET, table, sizeof(table));
    if (err != ESP_OK) {
        return err;
    }
    mbedtls_md5_context md5;
    mbedtls_md5_init(&md5);
    MD5_STARTS(&md5);
    bool md5_found = false;
    nparts = 0;
    for (uint32_t off = 0; off < PT_MAX_LEN; off += 32) {
        const uint8_t *e = table + off;
        uint16_t magic = e[0] | e[1] << 8;
        if (magic == 0xEBEB) {
            uint8_t digest[16];
            MD5_FINISH(&md5, digest);
            md5_found = memcmp(digest, e + 16, 16) == 0;
            break;
        }
        if (magic != 0x50AA) {
            break;
        }
        MD5_UPDATE(&md5, e, 32);
        esp_partition_t *p = &parts[nparts++];
        memset(p, 0, sizeof(*p));
        p->type = e[2];
        p->subtype = e[3];
        memcpy(&p->address, e + 4, 4);
        memcpy(&p->size, e + 8, 4);
        p->erase_size = SECTOR;
        memcpy(p->label, e + 12, 16);
        uint32_t flags;
        memcpy(&flags, e + 28, 4);
        p->encrypted = flags & 1;
        p->readonly = (flags >> 1) & 1;
    }
    mbedtls_md5_free(&md5);
    loaded = md5_found;
    if (!loaded) {
        nparts = 0;
    }
    return loaded ? ESP_OK : ESP_ERR_NOT_FOUND;
}

void host_partitions_clear(void) {
    nparts = 0;
    loaded = false;
}

// The device is open and its table read (on first use, as ESP-IDF's load_partitions()).
static bool ready(void) {
    return host_device_ready() && (loaded || host_partitions_load() == ESP_OK);
}

const esp_partition_t *host_partition_app_at(uint32_t address) {
    const esp_partition_t *found = NULL;
    if (!ready()) {
        return NULL;
    }
    for (int i = 0; i < nparts; i++) {
        if (parts[i].type == ESP_PARTITION_TYPE_APP && parts[i].address == address) {
            found = &parts[i];
        }
    }
    return found;
}

struct esp_partition_iterator_opaque_ {
    esp_partition_type_t type;
    esp_partition_subtype_t subtype;
    char label[17];
    bool any_label;
    int index;
};

static bool matches(const esp_partition_t *p, esp_partition_iterator_t it) {
    return (it->type == ESP_PARTITION_TYPE_ANY || p->type == it->type)
           && (it->subtype == ESP_PARTITION_SUBTYPE_ANY || p->subtype == it->subtype)
           && (it->any_label || strncmp(p->label, it->label, sizeof(p->label)) == 0);
}

static esp_partition_iterator_t advance(esp_partition_iterator_t it) {
    while (++it->index < nparts) {
        if (matches(&parts[it->index], it)) {
            return it;
        }
    }
    free(it);
    return NULL;
}

esp_partition_iterator_t esp_partition_find(esp_partition_type_t type,
    esp_partition_subtype_t subtype, const char *label) {
    if (!ready()) {
        return NULL;
    }
    esp_partition_iterator_t it = calloc(1, sizeof(*it));
    if (it == NULL) {
        return NULL;
    }
    it->type = type;
    it->subtype = subtype;
    it->any_label = label == NULL;
    if (label) {
        snprintf(it->label, sizeof(it->label), "%s", label);
    }
    it->index = -1;
    return advance(it);
}

const esp_partition_t *esp_partition_find_first(esp_partition_type_t type,
    esp_partition_subtype_t subtype, const char *label) {
    esp_partition_iterator_t it = esp_partition_find(type, subtype, label);
    if (it == NULL) {
        return NULL;
    }
    const esp_partition_t *p = esp_partition_get(it);
    esp_partition_iterator_release(it);
    return p;
}

const esp_partition_t *esp_partition_get(esp_partition_iterator_t it) {
    return &parts[it->index];
}

esp_partition_iterator_t esp_partition_next(esp_partition_iterator_t it) {
    return advance(it);
}

void esp_partition_iterator_release(esp_partition_iterator_t it) {
    free(it);
}

const esp_partition_t *esp_partition_verify(const esp_partition_t *p) {
    if (p == NULL || !ready()) {
        return NULL;
    }
    for (int i = 0; i < nparts; i++) {
        const esp_partition_t *q = &parts[i];
        if (q->address == p->address && q->size == p->size && q->type == p->type
            && q->subtype == p->subtype) {
            return q;
        }
    }
    return NULL;
}

esp_err_t esp_partition_read(const esp_partition_t *p, size_t off, void *dst, size_t size) {
    if (off > p->size) {
        return ESP_ERR_INVALID_ARG;
    }
    if (size > p->size - off) {
        return ESP_ERR_INVALID_SIZE;
    }
    return host_flash_read(p->address + off, dst, size);
}

esp_err_t esp_partition_write(const esp_partition_t *p, size_t off, const void *src,
    size_t size) {
    if (p->readonly) {
        return ESP_ERR_NOT_ALLOWED;
    }
    if (off > p->size) {
        return ESP_ERR_INVALID_ARG;
    }
    if (size > p->size - off) {
        return ESP_ERR_INVALID_SIZE;
    }
    return host_flash_program(p->address + off, src, size);
}

esp_err_t esp_partition_erase_range(const esp_partition_t *p, size_t off, size_t size) {
    if (p->readonly) {
        return ESP_ERR_NOT_ALLOWED;
    }
    if (off > p->size) {
        return ESP_ERR_INVALID_ARG;
    }
    if (size > p->size - off || size % SECTOR) {
        return ESP_ERR_INVALID_SIZE;
    }
    if (off % SECTOR) {
        return ESP_ERR_INVALID_ARG;
    }
    return host_flash_erase_region(p->address + off, size);
}

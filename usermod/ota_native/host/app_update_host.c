// esp_ota_* and the otadata partition, as ESP-IDF's components/app_update/esp_ota_ops.c has
// them, v5.3-v5.5 ($OTA_HOST_IDF, ota_host_set_idf()). Uses esp_image_format_host.c (image
// verification), esp_partition_host.c and flash_host.c (the device, esp_restart()), as
// app_update requires bootloader_support, esp_partition and spi_flash in ESP-IDF.

#include <string.h>

#include "esp_app_format.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "app_update_host.h"
#include "esp_image_format_host.h"
#include "esp_partition_host.h"
#include "flash_host.h"

#define MAX_HANDLES (4)

typedef struct {
    uint32_t ota_seq;
    uint8_t seq_label[20];
    uint32_t ota_state;
    uint32_t crc;
} ota_select_entry_t;

typedef struct {
    esp_ota_handle_t handle;
    const esp_partition_t *part;
    bool need_erase;
    uint32_t wrote_size;
} ota_entry_t;

static ota_entry_t entries[MAX_HANDLES];
static uint32_t last_handle;

void host_ota_handles_clear(void) {
    memset(entries, 0, sizeof(entries));
}

// ---- otadata

static uint32_t crc32_le(uint32_t init, const uint8_t *buf, size_t len) {
    uint32_t crc = ~init;
    while (len--) {
        crc ^= *buf++;
        for (int i = 0; i < 8; i++) {
            crc = (crc >> 1) ^ (crc & 1 ? 0xEDB88320u : 0);
        }
    }
    return ~crc;
}

static uint32_t select_crc(const ota_select_entry_t *s) {
    return crc32_le(UINT32_MAX, (const uint8_t *)&s->ota_seq, 4);
}

static bool select_invalid(const ota_select_entry_t *s) {
    return s->ota_seq == UINT32_MAX || s->ota_state == ESP_OTA_IMG_INVALID
           || s->ota_state == ESP_OTA_IMG_ABORTED;
}

static bool select_valid(const ota_select_entry_t *s) {
    return !select_invalid(s) && s->crc == select_crc(s);
}

static int select_otadata(const ota_select_entry_t *two, const bool *valid, bool max) {
    if (valid[0] && valid[1]) {
        uint32_t a = two[0].ota_seq, b = two[1].ota_seq;
        uint32_t pick = max ? (a > b ? a : b) : (a < b ? a : b);
        return pick == a ? 0 : 1;
    }
    return valid[0] ? 0 : valid[1] ? 1 : -1;
}

static int active_otadata(const ota_select_entry_t *two) {
    bool valid[2] = {select_valid(&two[0]), select_valid(&two[1])};
    return select_otadata(two, valid, true);
}

static const esp_partition_t *read_otadata(ota_select_entry_t *two) {
    const esp_partition_t *p = esp_partition_find_first(ESP_PARTITION_TYPE_DATA,
        ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
    if (p == NULL || esp_partition_read(p, 0, &two[0], sizeof(two[0])) != ESP_OK
        || esp_partition_read(p, p->erase_size, &two[1], sizeof(two[1])) != ESP_OK) {
        return NULL;
    }
    return p;
}

static uint8_t app_count(void) {
    uint8_t n = 0;
    while (esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + n,
        NULL)) {
        n++;
    }
    return n;
}

static const esp_partition_t *slot_partition(uint32_t seq, uint8_t count) {
    return esp_partition_find_first(ESP_PARTITION_TYPE_APP,
        ESP_PARTITION_SUBTYPE_APP_OTA_MIN + (seq - 1) % count, NULL);
}

static esp_err_t rewrite_ota_seq(ota_select_entry_t *two, uint32_t seq, int sec,
    const esp_partition_t *od) {
    two[sec].ota_seq = seq;
    two[sec].crc = select_crc(&two[sec]);
    esp_err_t err = esp_partition_erase_range(od, sec * od->erase_size, od->erase_size);
    if (err != ESP_OK) {
        return err;
    }
    return esp_partition_write(od, sec * od->erase_size, &two[sec], sizeof(two[sec]));
}

static bool is_ota(const esp_partition_t *p) {
    return p && p->type == ESP_PARTITION_TYPE_APP && p->subtype >= ESP_PARTITION_SUBTYPE_APP_OTA_MIN
           && p->subtype < ESP_PARTITION_SUBTYPE_APP_OTA_MAX;
}

// ---- esp_ota_*

static ota_entry_t *find_entry(esp_ota_handle_t handle) {
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (entries[i].handle != 0 && entries[i].handle == handle) {
            return &entries[i];
        }
    }
    return NULL;
}

// esp_ota_init_entry(): a handle for an update of partition (NULL: all handles in use).
static ota_entry_t *new_entry(const esp_partition_t *partition) {
    for (int i = 0; i < MAX_HANDLES; i++) {
        ota_entry_t *e = &entries[i];
        if (e->handle == 0) {
            memset(e, 0, sizeof(*e));
            e->handle = ++last_handle;
            e->part = partition;
            return e;
        }
    }
    return NULL;
}

const esp_partition_t *esp_ota_get_running_partition(void) {
    return host_device_ready() ? host_partition_app_at(host_device.running) : NULL;
}

// erase_last_boot_app_partition(skip_app_part_erase=true) of esp_ota_ops.c (ESP-IDF v5.5)
static void invalidate_inactive_ota_data_slot(void) {
    ota_select_entry_t two[2];
    const esp_partition_t *od = read_otadata(two);
    uint8_t count = app_count();
    int active = od ? active_otadata(two) : -1;
    if (active == -1 || count == 0) {
        return;
    }
    int inactive = (~active) & 1;
    if (two[inactive].ota_seq == UINT32_MAX || two[inactive].crc != select_crc(&two[inactive])) {
        return;
    }
    const esp_partition_t *last = slot_partition(two[inactive].ota_seq, count);
    if (last == NULL || last == esp_ota_get_running_partition()) {
        return;
    }
    esp_partition_erase_range(od, inactive * od->erase_size, od->erase_size);
}

esp_err_t esp_ota_begin(const esp_partition_t *partition, size_t image_size,
    esp_ota_handle_t *out_handle) {
    if (partition == NULL || out_handle == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (partition->type == ESP_PARTITION_TYPE_APP) {
        if (!is_ota(partition)) {
            return ESP_ERR_INVALID_ARG;
        }
        if (partition == esp_ota_get_running_partition()) {
            return ESP_ERR_OTA_PARTITION_CONFLICT;
        }
        esp_ota_img_states_t st;
        if (host_device.rollback && esp_ota_get_state_partition(esp_ota_get_running_partition(), &st) == ESP_OK
            && st == ESP_OTA_IMG_PENDING_VERIFY) {
            return ESP_ERR_OTA_ROLLBACK_INVALID_STATE;
        }
    }
    ota_entry_t *e = new_entry(partition);
    if (e == NULL) {
        return ESP_ERR_NO_MEM;
    }
    e->need_erase = image_size == OTA_WITH_SEQUENTIAL_WRITES;
    *out_handle = e->handle;
    if (image_size != OTA_WITH_SEQUENTIAL_WRITES) {
        size_t erase = (image_size == 0 || image_size == OTA_SIZE_UNKNOWN)
            ? partition->size : ALIGN_UP(image_size, partition->erase_size);
        esp_err_t err = esp_partition_erase_range(partition, 0, erase);
        if (err != ESP_OK) {
            return err; // as ESP-IDF: the handle stays allocated until esp_ota_abort()
        }
    }
    if (host_device.idf >= 0x0505 && host_device.rollback && is_ota(partition)) {
        invalidate_inactive_ota_data_slot();
    }
    return ESP_OK;
}

// esp_ota_resume() (ESP-IDF v5.3.3, v5.4.2, v5.5): no erase, no PENDING_VERIFY check, no
// otadata invalidation; writing goes on at image_offset.
esp_err_t esp_ota_resume(const esp_partition_t *partition, const size_t erase_size,
    const size_t image_offset, esp_ota_handle_t *out_handle) {
    if (host_device.idf < 0x0504) {
        return ESP_ERR_NOT_SUPPORTED; // emulating v5.3.0-v5.3.2, which lack esp_ota_resume()
    }
    if (partition == NULL || out_handle == NULL || image_offset > partition->size) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (partition->type == ESP_PARTITION_TYPE_APP && !is_ota(partition)) {
        return ESP_ERR_INVALID_ARG;
    }
    if (partition == esp_ota_get_running_partition()) {
        return ESP_ERR_OTA_PARTITION_CONFLICT;
    }
    ota_entry_t *e = new_entry(partition);
    if (e == NULL) {
        return ESP_ERR_NO_MEM;
    }
    e->wrote_size = image_offset;
    e->need_erase = erase_size == OTA_WITH_SEQUENTIAL_WRITES;
    *out_handle = e->handle;
    return ESP_OK;
}

esp_err_t esp_ota_write(esp_ota_handle_t handle, const void *data, size_t size) {
    const uint8_t *bytes = data;
    if (data == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (size == 0) {
        return ESP_OK;
    }
    ota_entry_t *e = find_entry(handle);
    if (e == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    esp_err_t err;
    if (e->need_erase) {
        uint32_t es = e->part->erase_size;
        uint32_t first = e->wrote_size / es, last = (e->wrote_size + size - 1) / es;
        err = ESP_OK;
        if (e->wrote_size % es == 0) {
            err = esp_partition_erase_range(e->part, e->wrote_size, (last - first + 1) * es);
        } else if (first != last) {
            err = esp_partition_erase_range(e->part, (first + 1) * es, (last - first) * es);
        }
        if (err != ESP_OK) {
            return err;
        }
    }
    if (e->wrote_size == 0 && e->part->type == ESP_PARTITION_TYPE_APP
        && bytes[0] != ESP_IMAGE_HEADER_MAGIC) {
        return ESP_ERR_OTA_VALIDATE_FAILED;
    }
    err = esp_partition_write(e->part, e->wrote_size, bytes, size);
    if (err == ESP_OK) {
        e->wrote_size += size;
    }
    return err;
}

esp_err_t esp_ota_abort(esp_ota_handle_t handle) {
    ota_entry_t *e = find_entry(handle);
    if (e == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    memset(e, 0, sizeof(*e));
    return ESP_OK;
}

esp_err_t esp_ota_end(esp_ota_handle_t handle) {
    ota_entry_t *e = find_entry(handle);
    if (e == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    esp_err_t ret = ESP_OK;
    if (e->wrote_size == 0) {
        ret = ESP_ERR_INVALID_ARG;
    } else if (e->part->type == ESP_PARTITION_TYPE_APP && host_image_verify(e->part) != ESP_OK) {
        ret = ESP_ERR_OTA_VALIDATE_FAILED;
    }
    memset(e, 0, sizeof(*e));
    return ret;
}

static esp_err_t rewrite_ota_data(esp_partition_subtype_t subtype) {
    ota_select_entry_t two[2];
    const esp_partition_t *od = read_otadata(two);
    if (od == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    uint8_t count = app_count();
    uint32_t id = subtype & 0x0F;
    if (id >= count) {
        return ESP_ERR_INVALID_ARG;
    }
    uint32_t state = host_device.rollback ? ESP_OTA_IMG_NEW : ESP_OTA_IMG_UNDEFINED;
    int active = active_otadata(two);
    if (active != -1) {
        uint32_t seq = two[active].ota_seq, i = 0;
        while (seq > (id + 1) % count + i * count) {
            i++;
        }
        int next = (~active) & 1;
        two[next].ota_state = state;
        return rewrite_ota_seq(two, (id + 1) % count + i * count, next, od);
    }
    two[0].ota_state = state;
    return rewrite_ota_seq(two, id + 1, 0, od);
}

esp_err_t esp_ota_set_boot_partition(const esp_partition_t *partition) {
    if (partition == NULL || !host_device_ready()) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL || host_image_verify(partition) != ESP_OK) {
        return ESP_ERR_OTA_VALIDATE_FAILED;
    }
    if (partition->type != ESP_PARTITION_TYPE_APP) {
        return ESP_ERR_INVALID_ARG;
    }
    if (partition->subtype == ESP_PARTITION_SUBTYPE_APP_FACTORY) {
        const esp_partition_t *od = esp_partition_find_first(ESP_PARTITION_TYPE_DATA,
            ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
        return od ? esp_partition_erase_range(od, 0, od->size) : ESP_ERR_NOT_FOUND;
    }
    return rewrite_ota_data(partition->subtype);
}

static const esp_partition_t *find_default_boot_partition(void) {
    const esp_partition_t *p = esp_partition_find_first(ESP_PARTITION_TYPE_APP,
        ESP_PARTITION_SUBTYPE_APP_FACTORY, NULL);
    for (int s = ESP_PARTITION_SUBTYPE_APP_OTA_MIN; p == NULL && s < ESP_PARTITION_SUBTYPE_APP_OTA_MAX;
         s++) {
        p = esp_partition_find_first(ESP_PARTITION_TYPE_APP, s, NULL);
    }
    return p ? p : esp_partition_find_first(ESP_PARTITION_TYPE_APP,
        ESP_PARTITION_SUBTYPE_APP_TEST, NULL);
}

const esp_partition_t *esp_ota_get_boot_partition(void) {
    ota_select_entry_t two[2];
    if (read_otadata(two) == NULL) {
        return NULL;
    }
    uint8_t count = app_count();
    if ((select_invalid(&two[0]) && select_invalid(&two[1])) || count == 0) {
        return find_default_boot_partition();
    }
    int active = active_otadata(two);
    return active == -1 ? find_default_boot_partition()
        : slot_partition(two[active].ota_seq, count);
}

const esp_partition_t *esp_ota_get_next_update_partition(const esp_partition_t *start_from) {
    start_from = start_from ? esp_partition_verify(start_from)
        : esp_ota_get_running_partition();
    const esp_partition_t *def = NULL;
    bool next_is_result = false;
    for (int t = ESP_PARTITION_SUBTYPE_APP_OTA_0; t != ESP_PARTITION_SUBTYPE_APP_OTA_MAX; t++) {
        const esp_partition_t *p = esp_partition_find_first(ESP_PARTITION_TYPE_APP, t, NULL);
        if (p == NULL) {
            continue;
        }
        if (def == NULL) {
            def = p;
        }
        if (p == start_from) {
            next_is_result = true;
        } else if (next_is_result) {
            return p;
        }
    }
    return def;
}

esp_err_t esp_ota_get_partition_description(const esp_partition_t *partition,
    esp_app_desc_t *app_desc) {
    if (partition == NULL || app_desc == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (partition->type != ESP_PARTITION_TYPE_APP) {
        return ESP_ERR_NOT_SUPPORTED;
    }
    esp_err_t err = esp_partition_read(partition, sizeof(esp_image_header_t)
        + sizeof(esp_image_segment_header_t), app_desc, sizeof(*app_desc));
    if (err != ESP_OK) {
        return err;
    }
    return app_desc->magic_word == ESP_APP_DESC_MAGIC_WORD ? ESP_OK : ESP_ERR_NOT_FOUND;
}

esp_err_t esp_ota_get_state_partition(const esp_partition_t *partition,
    esp_ota_img_states_t *ota_state) {
    if (partition == NULL || ota_state == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (!is_ota(partition)) {
        return ESP_ERR_NOT_SUPPORTED;
    }
    ota_select_entry_t two[2];
    uint8_t count = app_count();
    if (read_otadata(two) == NULL || count == 0) {
        return ESP_ERR_NOT_FOUND;
    }
    int req = partition->subtype - ESP_PARTITION_SUBTYPE_APP_OTA_MIN;
    for (int i = 0; i < 2; i++) {
        if ((int)((two[i].ota_seq - 1) % count) == req && two[i].crc == select_crc(&two[i])) {
            *ota_state = two[i].ota_state;
            return ESP_OK;
        }
    }
    return ESP_ERR_NOT_FOUND;
}

bool esp_ota_check_rollback_is_possible(void) {
    ota_select_entry_t two[2];
    if (read_otadata(two) == NULL) {
        return false;
    }
    uint8_t count = app_count();
    if (count == 0) {
        return false;
    }
    bool valid[2] = {select_valid(&two[0]), select_valid(&two[1])};
    int active = select_otadata(two, valid, true);
    if (active == -1) {
        return false;
    }
    int last = (~active) & 1;
    const esp_partition_t *p = valid[last] ? slot_partition(two[last].ota_seq, count)
        : esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_FACTORY,
        NULL);
    return p != NULL && host_image_verify(p) == ESP_OK;
}

static esp_err_t current_ota_is_workable(bool valid) {
    ota_select_entry_t two[2];
    const esp_partition_t *od = read_otadata(two);
    if (od == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    int active = active_otadata(two);
    if (active == -1 || app_count() == 0) {
        return ESP_FAIL; // running firmware is factory
    }
    if (valid && two[active].ota_state != ESP_OTA_IMG_VALID) {
        two[active].ota_state = ESP_OTA_IMG_VALID;
        return rewrite_ota_seq(two, two[active].ota_seq, active, od);
    }
    if (!valid) {
        if (!esp_ota_check_rollback_is_possible()) {
            return ESP_ERR_OTA_ROLLBACK_FAILED;
        }
        two[active].ota_state = ESP_OTA_IMG_INVALID;
        return rewrite_ota_seq(two, two[active].ota_seq, active, od);
    }
    return ESP_OK;
}

esp_err_t esp_ota_mark_app_valid_cancel_rollback(void) {
    return current_ota_is_workable(true);
}

esp_err_t esp_ota_mark_app_invalid_rollback_and_reboot(void) {
    esp_err_t err = current_ota_is_workable(false);
    if (err == ESP_OK) {
        esp_restart();
    }
    return err;
}


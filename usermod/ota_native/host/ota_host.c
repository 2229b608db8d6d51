// Host backend: the ESP-IDF functions the OTA core calls, with ESP-IDF's behaviour, over a flash
// image file. Sources followed: components/esp_partition (partition.c, partition_target.c),
// components/app_update/esp_ota_ops.c, components/bootloader_support (esp_image_format.c,
// bootloader_common_loader.c) and components/spi_flash/esp_flash_api.c, ESP-IDF v5.3-v5.5.
// Flash physics as sim/espsim/flash.py: erase to 0xFF, page programs only clear bits, 64 KB
// block erases where the range allows.

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esp_app_format.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "mbedtls/md5.h"
#include "ota_host.h"
#include "ota_sha256.h"

#define SECTOR (4096u)
#define BLOCK (65536u)
#define PAGE (256u)
#define PT_OFFSET (0x8000u)
#define PT_MAX_LEN (0xC00u)
#define MAX_PARTS (PT_MAX_LEN / 32)
#define MAX_HANDLES (4)
#define ESP_ERR_IMAGE_INVALID (0x2002)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))

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

static struct {
    int fd;
    char path[480];
    uint32_t size;
    esp_partition_t parts[MAX_PARTS];
    int nparts;
    const esp_partition_t *running;
    uint16_t chip_id;
    unsigned chip_rev;
    bool rollback;
    unsigned idf;
    ota_host_counts_t counts;
    long cut;
    bool dead;
    bool exit_on_cut; // armed by $ESPSIM_CUT_AFTER: the process ends, as a chip loses power
    ota_entry_t entries[MAX_HANDLES];
    uint32_t last_handle;
    void (*restart_hook)(void);
} h = { .fd = -1, .cut = -1, .idf = 0x0505 };

// ---- The flash chip

static bool begin_op(bool *half) {
    *half = false;
    if (h.dead) {
        return false;
    }
    if (h.cut == 0) {
        h.dead = true;
        *half = true;
    } else if (h.cut > 0) {
        h.cut--;
    }
    return true;
}

// The interrupted operation is half done: with the switch armed from the environment the
// simulated device stops here, else (C tests) the operation fails and so does all that follows.
static esp_err_t power_cut(const char *what, uint32_t addr) {
    if (h.exit_on_cut) {
        fprintf(stderr, "PowerCut: power cut during %s at 0x%x\n", what, (unsigned)addr);
        fflush(NULL);
        _exit(3);
    }
    return ESP_ERR_FLASH_OP_FAIL;
}

static esp_err_t raw_io(bool write, uint32_t addr, void *buf, size_t n) {
    ssize_t r = write ? pwrite(h.fd, buf, n, addr) : pread(h.fd, buf, n, addr);
    return r == (ssize_t)n ? ESP_OK : ESP_FAIL;
}

// The emulated chip's operations are never inlined, so that profilers (bench/cpu.py) can tell
// the emulation's cost from the code under test.
#define EMULATION __attribute__((noinline))

EMULATION static esp_err_t flash_read(uint32_t addr, void *buf, size_t n) {
    if (h.dead) {
        return ESP_ERR_FLASH_OP_FAIL;
    }
    if (addr > h.size || n > h.size - addr) {
        return ESP_ERR_INVALID_ARG;
    }
    h.counts.read_ops++;
    h.counts.read_bytes += n;
    return raw_io(false, addr, buf, n);
}

EMULATION static esp_err_t flash_erase(uint32_t addr, uint32_t n, uint32_t *counter) {
    bool half;
    if (!begin_op(&half)) {
        return ESP_ERR_FLASH_OP_FAIL;
    }
    (*counter)++;
    uint8_t ff[SECTOR];
    memset(ff, 0xFF, sizeof(ff));
    uint32_t todo = half ? n / 2 : n;
    for (uint32_t pos = 0; pos < todo; pos += SECTOR) {
        if (raw_io(true, addr + pos, ff, MIN(SECTOR, todo - pos)) != ESP_OK) {
            return ESP_FAIL;
        }
    }
    return half ? power_cut(counter == &h.counts.erase_64k ? "erase_64k" : "erase_4k", addr)
        : ESP_OK;
}

// esp_flash_erase_region(): a 64 KB block erase where aligned and long enough, else 4 KB.
static esp_err_t flash_erase_region(uint32_t start, uint32_t len) {
    if (start > h.size || len > h.size - start || start % SECTOR || len % SECTOR) {
        return ESP_ERR_INVALID_ARG;
    }
    while (len > 0) {
        esp_err_t err;
        if (start % BLOCK == 0 && len >= BLOCK) {
            err = flash_erase(start, BLOCK, &h.counts.erase_64k);
            start += BLOCK;
            len -= BLOCK;
        } else {
            err = flash_erase(start, SECTOR, &h.counts.erase_4k);
            start += SECTOR;
            len -= SECTOR;
        }
        if (err != ESP_OK) {
            return err;
        }
    }
    return ESP_OK;
}

// esp_flash_write(): one page program per 256-byte page touched; NOR only clears bits.
EMULATION static esp_err_t flash_program(uint32_t addr, const uint8_t *data, size_t len) {
    if (addr > h.size || len > h.size - addr) {
        return ESP_ERR_INVALID_ARG;
    }
    while (len > 0) {
        size_t n = MIN(len, PAGE - addr % PAGE);
        bool half;
        if (!begin_op(&half)) {
            return ESP_ERR_FLASH_OP_FAIL;
        }
        if (half) {
            n /= 2;
        }
        uint8_t page[PAGE];
        if (raw_io(false, addr, page, n) != ESP_OK) {
            return ESP_FAIL;
        }
        for (size_t i = 0; i < n; i++) {
            page[i] &= data[i];
        }
        if (raw_io(true, addr, page, n) != ESP_OK) {
            return ESP_FAIL;
        }
        h.counts.program_pages++;
        h.counts.program_bytes += n;
        if (half) {
            return power_cut("page program", addr);
        }
        addr += n;
        data += n;
        len -= n;
    }
    return ESP_OK;
}

// ---- Opening the device

static uint16_t chip_id_of(const char *name) {
    static const struct {
        const char *name;
        uint16_t id;
    } chips[] = {
        {"esp32", 0}, {"esp32s2", 2}, {"esp32c3", 5}, {"esp32s3", 9}, {"esp32c2", 12},
        {"esp32c6", 13}, {"esp32h2", 16}, {"esp32p4", 18}, {"esp32c5", 23},
    };
    for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
        if (strcmp(chips[i].name, name) == 0) {
            return chips[i].id;
        }
    }
    return 0xFFFF;
}

// <flash>.state: key=value lines (sim/espsim/device.py)
static uint32_t read_state(void) {
    uint32_t running = 0;
    h.chip_id = 0;
    h.chip_rev = 300;
    h.rollback = true;
    char p[512], line[128];
    snprintf(p, sizeof(p), "%s.state", h.path);
    FILE *f = fopen(p, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            continue;
        }
        *eq = 0;
        char *val = eq + 1;
        val[strcspn(val, "\r\n")] = 0;
        if (strcmp(line, "running") == 0) {
            running = strtoul(val, NULL, 0);
        } else if (strcmp(line, "chip") == 0) {
            h.chip_id = chip_id_of(val);
        } else if (strcmp(line, "chip_rev") == 0) {
            h.chip_rev = strtoul(val, NULL, 0);
        } else if (strcmp(line, "rollback") == 0) {
            h.rollback = strtoul(val, NULL, 0) != 0;
        }
    }
    fclose(f);
    return running;
}

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
static esp_err_t load_partitions(void) {
    uint8_t table[PT_MAX_LEN];
    esp_err_t err = flash_read(PT_OFFSET, table, sizeof(table));
    if (err != ESP_OK) {
        return err;
    }
    mbedtls_md5_context md5;
    mbedtls_md5_init(&md5);
    MD5_STARTS(&md5);
    bool md5_found = false;
    h.nparts = 0;
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
        esp_partition_t *p = &h.parts[h.nparts++];
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
    return md5_found ? ESP_OK : ESP_ERR_NOT_FOUND;
}

esp_err_t ota_host_open(const char *path) {
    ota_host_close();
    snprintf(h.path, sizeof(h.path), "%s", path);
    h.fd = open(path, O_RDWR);
    if (h.fd < 0) {
        return ESP_ERR_NOT_FOUND;
    }
    off_t end = lseek(h.fd, 0, SEEK_END);
    h.size = end > 0 ? (uint32_t)end : 0;
    memset(&h.counts, 0, sizeof(h.counts));
    const char *cut = getenv("ESPSIM_CUT_AFTER");
    h.cut = cut && *cut ? strtol(cut, NULL, 0) : -1;
    h.exit_on_cut = h.cut >= 0;
    const char *idf = getenv("OTA_HOST_IDF");
    h.idf = idf && strncmp(idf, "5.3", 3) == 0 ? 0x0503
        : idf && strncmp(idf, "5.4", 3) == 0 ? 0x0504 : 0x0505;
    h.dead = false;
    uint32_t running = read_state();
    esp_err_t err = load_partitions();
    if (err != ESP_OK) {
        ota_host_close();
        return err;
    }
    h.running = NULL;
    for (int i = 0; i < h.nparts; i++) {
        if (h.parts[i].type == ESP_PARTITION_TYPE_APP && h.parts[i].address == running) {
            h.running = &h.parts[i];
        }
    }
    return ESP_OK;
}

void ota_host_close(void) {
    if (h.fd >= 0) {
        close(h.fd);
    }
    h.fd = -1;
    h.nparts = 0;
    h.running = NULL;
    memset(h.entries, 0, sizeof(h.entries));
}

static bool ready(void) {
    if (h.fd < 0) {
        const char *path = getenv("ESPSIM_FLASH");
        if (path == NULL || ota_host_open(path) != ESP_OK) {
            fprintf(stderr, "ota_host: set ESPSIM_FLASH to a simulated flash image\n");
            return false;
        }
    }
    return true;
}

const ota_host_counts_t *ota_host_counts(void) {
    return &h.counts;
}

void ota_host_reset_counts(void) {
    memset(&h.counts, 0, sizeof(h.counts));
}

void ota_host_cut_after(long n) {
    h.cut = n;
    h.dead = false;
    h.exit_on_cut = false;
}

bool ota_host_powered(void) {
    return !h.dead;
}

void ota_host_set_idf(unsigned version) {
    h.idf = version;
}

void ota_host_on_restart(void (*hook)(void)) {
    h.restart_hook = hook;
}

const char *esp_err_to_name(esp_err_t code) {
    static const struct {
        esp_err_t code;
        const char *name;
    } names[] = {
        {ESP_OK, "ESP_OK"}, {ESP_FAIL, "ESP_FAIL"}, {ESP_ERR_NO_MEM, "ESP_ERR_NO_MEM"},
        {ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG"},
        {ESP_ERR_INVALID_STATE, "ESP_ERR_INVALID_STATE"},
        {ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE"}, {ESP_ERR_NOT_FOUND, "ESP_ERR_NOT_FOUND"},
        {ESP_ERR_NOT_SUPPORTED, "ESP_ERR_NOT_SUPPORTED"}, {ESP_ERR_TIMEOUT, "ESP_ERR_TIMEOUT"},
        {ESP_ERR_NOT_ALLOWED, "ESP_ERR_NOT_ALLOWED"},
        {ESP_ERR_FLASH_OP_FAIL, "ESP_ERR_FLASH_OP_FAIL"},
        {ESP_ERR_OTA_PARTITION_CONFLICT, "ESP_ERR_OTA_PARTITION_CONFLICT"},
        {ESP_ERR_OTA_SELECT_INFO_INVALID, "ESP_ERR_OTA_SELECT_INFO_INVALID"},
        {ESP_ERR_OTA_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED"},
        {ESP_ERR_OTA_SMALL_SEC_VER, "ESP_ERR_OTA_SMALL_SEC_VER"},
        {ESP_ERR_OTA_ROLLBACK_FAILED, "ESP_ERR_OTA_ROLLBACK_FAILED"},
        {ESP_ERR_OTA_ROLLBACK_INVALID_STATE, "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"},
        {ESP_ERR_IMAGE_INVALID, "ESP_ERR_IMAGE_INVALID"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].code == code) {
            return names[i].name;
        }
    }
    return "UNKNOWN ERROR";
}

// ---- esp_partition_*

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
    while (++it->index < h.nparts) {
        if (matches(&h.parts[it->index], it)) {
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
    return &h.parts[it->index];
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
    for (int i = 0; i < h.nparts; i++) {
        const esp_partition_t *q = &h.parts[i];
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
    return flash_read(p->address + off, dst, size);
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
    return flash_program(p->address + off, src, size);
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
    return flash_erase_region(p->address + off, size);
}

// ---- App images: esp_image_verify(ESP_IMAGE_VERIFY) on an app partition

static bool mapped(uint32_t a) {
    return (a >= 0x3F400000 && a < 0x3F800000) || (a >= 0x400D0000 && a < 0x40400000);
}

// esp_image_verify()'s own reads and hashing, apart from the flash emulation and from the code
// under test, for profilers (bench/cpu.py).
EMULATION static esp_err_t image_read(uint32_t addr, void *buf, size_t n) {
    return flash_read(addr, buf, n);
}

EMULATION static void image_sha(ota_sha256_t *sha, const uint8_t *data, size_t len) {
    ota_sha256_update(sha, data, len);
}

esp_err_t ota_host_verify_image(const esp_partition_t *p) {
    esp_image_header_t hdr;
    esp_err_t err = image_read(p->address, &hdr, sizeof(hdr));
    if (err != ESP_OK) {
        return err;
    }
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    image_sha(&sha, (const uint8_t *)&hdr, sizeof(hdr));
    err = ESP_ERR_IMAGE_INVALID;
    uint16_t max_rev = hdr.max_chip_rev_full;
    if (hdr.magic != ESP_IMAGE_HEADER_MAGIC || hdr.chip_id != h.chip_id
        || h.chip_rev < hdr.min_chip_rev_full
        || (max_rev != 0 && max_rev != 0xFFFF && h.chip_rev > max_rev)
        || hdr.segment_count > ESP_IMAGE_MAX_SEGMENTS) {
        goto out;
    }
    uint32_t addr = p->address + sizeof(hdr);
    uint8_t checksum = 0xEF;
    uint8_t buf[SECTOR];
    for (int i = 0; i < hdr.segment_count; i++) {
        esp_image_segment_header_t seg;
        if (addr + sizeof(seg) > h.size) {
            err = ESP_FAIL;
            goto out;
        }
        if ((err = image_read(addr, &seg, sizeof(seg))) != ESP_OK) {
            goto out;
        }
        err = ESP_ERR_IMAGE_INVALID;
        image_sha(&sha, (const uint8_t *)&seg, sizeof(seg));
        uint32_t data = addr + sizeof(seg);
        if (seg.data_len % 4 || seg.data_len >= 0x1000000
            || (mapped(seg.load_addr) && data % BLOCK != seg.load_addr % BLOCK)) {
            goto out;
        }
        if (data > h.size || seg.data_len > h.size - data) {
            err = ESP_FAIL;
            goto out;
        }
        for (uint32_t pos = 0; pos < seg.data_len; pos += SECTOR) {
            uint32_t n = MIN(SECTOR, seg.data_len - pos);
            if ((err = image_read(data + pos, buf, n)) != ESP_OK) {
                goto out;
            }
            for (uint32_t k = 0; k < n; k++) {
                checksum ^= buf[k];
            }
            image_sha(&sha, buf, n);
        }
        err = ESP_ERR_IMAGE_INVALID;
        addr = data + seg.data_len;
    }
    uint32_t unpadded = addr - p->address;
    uint32_t pad = ((unpadded + 1 + 15) & ~15u) - unpadded;
    if (addr + pad > h.size) {
        err = ESP_FAIL;
        goto out;
    }
    if ((err = image_read(addr, buf, pad)) != ESP_OK) {
        goto out;
    }
    err = ESP_ERR_IMAGE_INVALID;
    if (buf[pad - 1] != checksum) {
        goto out;
    }
    image_sha(&sha, buf, pad);
    uint32_t len = unpadded + pad;
    uint8_t stored[OTA_SHA256_LEN], calc[OTA_SHA256_LEN];
    if (hdr.hash_appended) {
        if (p->address + len + OTA_SHA256_LEN > h.size) {
            err = ESP_FAIL;
            goto out;
        }
        if ((err = image_read(p->address + len, stored, sizeof(stored))) != ESP_OK) {
            goto out;
        }
        err = ESP_ERR_IMAGE_INVALID;
        len += OTA_SHA256_LEN;
    }
    if (len > p->size) {
        goto out;
    }
    if (hdr.hash_appended) {
        ota_sha256_peek(&sha, calc);
        if (memcmp(calc, stored, sizeof(calc)) != 0) {
            goto out;
        }
    }
    err = ESP_OK;
out:
    ota_sha256_free(&sha);
    return err;
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
        if (h.entries[i].handle != 0 && h.entries[i].handle == handle) {
            return &h.entries[i];
        }
    }
    return NULL;
}

// esp_ota_init_entry(): a handle for an update of partition (NULL: all handles in use).
static ota_entry_t *new_entry(const esp_partition_t *partition) {
    for (int i = 0; i < MAX_HANDLES; i++) {
        ota_entry_t *e = &h.entries[i];
        if (e->handle == 0) {
            memset(e, 0, sizeof(*e));
            e->handle = ++h.last_handle;
            e->part = partition;
            return e;
        }
    }
    return NULL;
}

const esp_partition_t *esp_ota_get_running_partition(void) {
    return ready() ? h.running : NULL;
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
        if (h.rollback && esp_ota_get_state_partition(h.running, &st) == ESP_OK
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
    if (h.idf >= 0x0505 && h.rollback && is_ota(partition)) {
        invalidate_inactive_ota_data_slot();
    }
    return ESP_OK;
}

// esp_ota_resume() (ESP-IDF v5.3.3, v5.4.2, v5.5): no erase, no PENDING_VERIFY check, no
// otadata invalidation; writing goes on at image_offset.
esp_err_t esp_ota_resume(const esp_partition_t *partition, const size_t erase_size,
    const size_t image_offset, esp_ota_handle_t *out_handle) {
    if (h.idf < 0x0504) {
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
    } else if (e->part->type == ESP_PARTITION_TYPE_APP && ota_host_verify_image(e->part) != ESP_OK) {
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
    uint32_t state = h.rollback ? ESP_OTA_IMG_NEW : ESP_OTA_IMG_UNDEFINED;
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
    if (partition == NULL || !ready()) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL || ota_host_verify_image(partition) != ESP_OK) {
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
    return p != NULL && ota_host_verify_image(p) == ESP_OK;
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

// The app ends here. The simulator's bootloader decides what runs next (mpota sim boot, or
// machine.reset() in the simulated device).
void esp_restart(void) {
    if (h.restart_hook) {
        h.restart_hook();
    }
    char p[512];
    snprintf(p, sizeof(p), "%s.state", h.path);
    FILE *f = fopen(p, "r");
    char state[1024] = "";
    size_t n = f ? fread(state, 1, sizeof(state) - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    state[n] = 0;
    f = fopen(p, "w");
    if (f) {
        // Keep every line but "running": the device is off until the simulator boots it.
        for (char *line = strtok(state, "\n"); line; line = strtok(NULL, "\n")) {
            fprintf(f, "%s\n", strncmp(line, "running=", 8) == 0 ? "running=0x0" : line);
        }
        fclose(f);
    }
    fprintf(stderr, "esp_restart(): the simulated device is off; boot it with `mpota sim boot`\n");
    exit(0);
}

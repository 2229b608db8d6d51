// App image verification and loading checks, as ESP-IDF's components/bootloader_support applies
// them (esp_image_format.c, bootloader_common_loader.c), v5.3-v5.5, for the simulated device's
// chip (soc_host.c):
// - host_image_verify(): esp_image_verify(ESP_IMAGE_VERIFY), what esp_ota_end() and
//   esp_ota_set_boot_partition() run in the app: header (magic, chip id, chip revision, segment
//   count), each segment's length and, for flash-mapped ones, its MMU page alignment, the
//   checksum, the length against the partition, the appended SHA-256;
// - host_image_load(): bootloader_load_image(ESP_IMAGE_LOAD), what the 2nd stage bootloader
//   runs before it starts an app: the same, plus verify_load_addresses() for every segment it
//   copies to RAM (not flash-mapped ones, not those below 0x10000000 such as esptool's padding
//   segments at address 0);
// - esp_image_get_metadata(): the header, segment headers and appended digest, unchecked but
//   for the segment headers, with no data read.
// With a debugger attached (ota_host_set_debugger(), esp_cpu_dbgr_is_attached()) the checksum
// and the appended SHA-256 are read but not compared, as ESP-IDF does.
// Uses flash_host.c (the device, its flash, esp_cpu_dbgr_is_attached()), soc_host.c (the chips)
// and ota_sha256.c; and esp_partition.h's types only.

#include <string.h>

#include "esp_app_format.h"
#include "esp_cpu.h"
#include "esp_image_format.h"
#include "esp_image_format_host.h"
#include "flash_host.h"
#include "ota_sha256.h"

#define LOAD_LIMIT (0x10000000u) // should_load(): lower addresses are never loaded
#define STACK_HEADROOM (32768u) // STACK_LOAD_HEADROOM
#define MAX_SEGMENT_LEN (0x1000000u) // ESP_IMAGE_MAX_FLASH_ADDR_SIZE
#define DESC_MMU_PAGE_SIZE (180u) // offsetof(esp_app_desc_t, mmu_page_size)

// esp_image_verify()'s own reads and hashing, apart from the flash emulation and from the code
// under test, for profilers (bench/cpu.py).
EMULATION static esp_err_t image_read(uint32_t addr, void *buf, size_t n) {
    return host_flash_read(addr, buf, n);
}

EMULATION static void image_sha(ota_sha256_t *sha, const uint8_t *data, size_t len) {
    ota_sha256_update(sha, data, len);
}

static bool in(const host_range_t *r, uint32_t a) {
    return a >= r->lo && a < r->hi;
}

static bool within(const host_range_t *r, uint32_t start, uint32_t end) {
    return in(r, start) && in(r, end - 1);
}

static bool overlaps(uint32_t a0, uint32_t a1, uint32_t b0, uint32_t b1) {
    return a0 < b1 && b0 < a1;
}

static bool flash_mapped(const host_chip_t *c, uint32_t a) {
    return in(&c->irom, a) || in(&c->drom, a);
}

// The address of the same word seen from the other bus of the shared D/IRAM. On chips with
// SOC_DIRAM_INVERTED (ESP32) the word order is reversed between the buses.
static uint32_t other_bus(const host_chip_t *c, uint32_t a, bool from_dram) {
    const host_range_t *from = from_dram ? &c->diram_dram : &c->diram_iram;
    const host_range_t *to = from_dram ? &c->diram_iram : &c->diram_dram;
    return c->diram_inverted ? to->lo + (from->hi - a) - 4 : to->lo + (a - from->lo);
}

// verify_load_addresses(): may the bootloader copy [start, end) to RAM? The bootloader's stack
// pointer is taken at SOC_ROM_STACK_START, the least the region it guards can be.
static bool load_ok(const host_chip_t *c, uint32_t start, uint32_t end, bool again) {
    bool in_dram = within(&c->dram, start, end);
    if (in_dram || within(&c->iram, start, end)) {
        if (in_dram) {
            if (overlaps(c->rom_stack_start - STACK_HEADROOM, c->rom_stack_start, start, end)
                || overlaps(c->bl_dram.lo, c->bl_dram.hi, start, end)) {
                return false;
            }
        } else if (overlaps(c->bl_loader.lo, c->bl_loader.hi, start, end)) {
            return false;
        }
        // The part in the shared D/IRAM is also checked as seen from the other bus, once.
        const host_range_t *shared = in_dram ? &c->diram_dram : &c->diram_iram;
        if (again || !overlaps(shared->lo, shared->hi, start, end)) {
            return true;
        }
        // esp_ptr_in_diram_iram() is false on chips whose two buses share addresses
        bool same = c->diram_dram.lo == c->diram_iram.lo;
        uint32_t s = in(shared, start) && (in_dram || !same) ? start : shared->lo;
        uint32_t e = in(shared, end - 1) && (in_dram || !same) ? end : shared->hi;
        uint32_t a = other_bus(c, s, in_dram), b = other_bus(c, e, in_dram);
        return a < b ? load_ok(c, a, b, true) : load_ok(c, b, a, true);
    }
    return within(&c->rtc_iram, start, end) || within(&c->rtc_dram, start, end)
           || within(&c->rtc_slow, start, end);
}

// verify_segment_header(): a segment's length, and for a flash-mapped segment its offset within
// an MMU page, whose size the first segment's app description gives on chips where it is
// configurable. ESP_ERR_IMAGE_INVALID, ESP_FAIL (no app description) or ESP_OK.
static esp_err_t check_segment(int i, const esp_image_segment_header_t *seg, uint32_t data,
    uint32_t *mmu_page) {
    const host_chip_t *chip = host_device.chip;
    if (chip == NULL) {
        return ESP_FAIL; // a chip the host backend does not know
    }
    if (seg->data_len % 4 || seg->data_len >= MAX_SEGMENT_LEN) {
        return ESP_ERR_IMAGE_INVALID;
    }
    if (i == 0 && chip->mmu_page_configurable) {
        // The image says which page size it was linked for (log2 in its app description;
        // 0 in images older than the field).
        uint32_t magic = 0;
        uint8_t log2 = 0;
        if (data + DESC_MMU_PAGE_SIZE + 1 > host_flash_size()
            || image_read(data, &magic, sizeof(magic)) != ESP_OK
            || image_read(data + DESC_MMU_PAGE_SIZE, &log2, 1) != ESP_OK
            || magic != ESP_APP_DESC_MAGIC_WORD) {
            return ESP_FAIL;
        }
        *mmu_page = log2 ? 1u << log2 : BLOCK;
    }
    if (flash_mapped(chip, seg->load_addr) && data % *mmu_page != seg->load_addr % *mmu_page) {
        return ESP_ERR_IMAGE_INVALID;
    }
    return ESP_OK;
}

static esp_err_t image_load(const esp_partition_t *p, bool do_load) {
    const host_chip_t *chip = host_device.chip;
    uint32_t flash_size = host_flash_size();
    esp_image_header_t hdr;
    esp_err_t err = image_read(p->address, &hdr, sizeof(hdr));
    if (err != ESP_OK) {
        return err;
    }
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    image_sha(&sha, (const uint8_t *)&hdr, sizeof(hdr));
    err = ESP_ERR_IMAGE_INVALID;
    if (hdr.magic != ESP_IMAGE_HEADER_MAGIC) {
        goto out;
    }
    // bootloader_common_check_chip_validity() answers ESP_FAIL for the chip and its revision
    uint16_t max_rev = hdr.max_chip_rev_full;
    if (chip == NULL || hdr.chip_id != chip->chip_id
        || host_device.chip_rev < hdr.min_chip_rev_full
        || (max_rev != 0 && max_rev != 0xFFFF && host_device.chip_rev > max_rev)) {
        err = ESP_FAIL;
        goto out;
    }
    if (hdr.segment_count > ESP_IMAGE_MAX_SEGMENTS) {
        goto out;
    }
    uint32_t addr = p->address + sizeof(hdr);
    uint32_t mmu_page = BLOCK; // CONFIG_MMU_PAGE_SIZE of a board with 4 MB of flash or more
    uint8_t checksum = 0xEF;
    uint8_t buf[SECTOR];
    for (int i = 0; i < hdr.segment_count; i++) {
        esp_image_segment_header_t seg;
        if (addr + sizeof(seg) > flash_size) {
            err = ESP_FAIL;
            goto out;
        }
        if ((err = image_read(addr, &seg, sizeof(seg))) != ESP_OK) {
            goto out;
        }
        image_sha(&sha, (const uint8_t *)&seg, sizeof(seg));
        uint32_t data = addr + sizeof(seg);
        if ((err = check_segment(i, &seg, data, &mmu_page)) != ESP_OK) {
            goto out;
        }
        err = ESP_ERR_IMAGE_INVALID;
        bool loaded = !flash_mapped(chip, seg.load_addr) && seg.load_addr >= LOAD_LIMIT;
        if (do_load && loaded && seg.data_len > 0
            && !load_ok(chip, seg.load_addr, seg.load_addr + seg.data_len, false)) {
            goto out;
        }
        if (data > flash_size || seg.data_len > flash_size - data) {
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
    // With a debugger attached ESP-IDF compares neither the checksum nor the digest.
    bool dbgr = esp_cpu_dbgr_is_attached();
    uint32_t unpadded = addr - p->address;
    uint32_t pad = ((unpadded + 1 + 15) & ~15u) - unpadded;
    if (addr + pad > flash_size) {
        err = ESP_FAIL;
        goto out;
    }
    memset(buf, 0, pad);
    if ((!dbgr || hdr.hash_appended) && (err = image_read(addr, buf, pad)) != ESP_OK) {
        goto out;
    }
    err = ESP_ERR_IMAGE_INVALID;
    if (!dbgr && buf[pad - 1] != checksum) {
        goto out;
    }
    image_sha(&sha, buf, pad);
    uint32_t len = unpadded + pad;
    uint8_t stored[OTA_SHA256_LEN], calc[OTA_SHA256_LEN];
    if (hdr.hash_appended) {
        if (p->address + len + OTA_SHA256_LEN > flash_size) {
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
    if (hdr.hash_appended && !dbgr) {
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

esp_err_t esp_image_get_metadata(const esp_partition_pos_t *part, esp_image_metadata_t *md) {
    if (md == NULL || part == NULL || part->size > MAX_SEGMENT_LEN) {
        return ESP_ERR_INVALID_ARG;
    }
    memset(md, 0, sizeof(*md));
    md->start_addr = part->offset;
    uint32_t flash_size = host_flash_size();
    if (part->offset + sizeof(md->image) > flash_size) {
        return ESP_FAIL;
    }
    esp_err_t err = image_read(part->offset, &md->image, sizeof(md->image));
    if (err != ESP_OK) {
        return err;
    }
    if (md->image.segment_count > ESP_IMAGE_MAX_SEGMENTS) {
        return ESP_ERR_IMAGE_INVALID; // (ESP-IDF reads on, past its arrays' end)
    }
    uint32_t addr = part->offset + sizeof(md->image);
    uint32_t mmu_page = BLOCK;
    for (int i = 0; i < md->image.segment_count; i++) {
        esp_image_segment_header_t *seg = &md->segments[i];
        if (addr + sizeof(*seg) > flash_size) {
            return ESP_FAIL;
        }
        if ((err = image_read(addr, seg, sizeof(*seg))) != ESP_OK) {
            return err;
        }
        uint32_t data = addr + sizeof(*seg);
        if ((err = check_segment(i, seg, data, &mmu_page)) != ESP_OK) {
            return err;
        }
        md->segment_data[i] = data;
        addr = data + seg->data_len;
        if (addr < part->offset) {
            return ESP_ERR_IMAGE_INVALID; // "image offset has wrapped"
        }
    }
    md->mmu_page_size = mmu_page;
    uint32_t unpadded = addr - part->offset;
    md->image_len = (unpadded + 1 + 15) & ~15u; // the checksum byte and its padding, not read
    if (md->image.hash_appended) {
        if (part->offset + md->image_len + ESP_IMAGE_HASH_LEN > flash_size) {
            return ESP_FAIL;
        }
        err = image_read(part->offset + md->image_len, md->image_digest, ESP_IMAGE_HASH_LEN);
        if (err != ESP_OK) {
            return err;
        }
        md->image_len += ESP_IMAGE_HASH_LEN;
    }
    return md->image_len > part->size ? ESP_ERR_IMAGE_INVALID : ESP_OK;
}

esp_err_t host_image_verify(const esp_partition_t *p) {
    return image_load(p, false);
}

esp_err_t host_image_load(const esp_partition_t *p) {
    return image_load(p, true);
}

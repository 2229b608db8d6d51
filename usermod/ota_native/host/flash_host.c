// The SPI flash chip, as ESP-IDF's components/spi_flash/esp_flash_api.c drives it, over a flash
// image file. Flash physics as sim/espsim/flash.py: erase to 0xFF, page programs only clear
// bits, 64 KB block erases where the range allows. The power-cut switch lives here, and a weak
// cell for tests: a bit that flips after it is programmed (ota_host_flip_after_program()).

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ota_host.h"
#include "ota_host_priv.h"

#define PAGE (256u)

static struct {
    int fd;
    uint32_t size;
    ota_host_counts_t counts;
    long cut;
    bool dead;
    bool exit_on_cut; // armed by $ESPSIM_CUT_AFTER: the process ends, as a chip loses power
    long flip_addr; // -1: no weak cell
    uint8_t flip_mask;
} f = { .fd = -1, .cut = -1, .flip_addr = -1 };

esp_err_t host_flash_open(const char *path) {
    host_flash_close();
    f.fd = open(path, O_RDWR);
    if (f.fd < 0) {
        return ESP_ERR_NOT_FOUND;
    }
    off_t end = lseek(f.fd, 0, SEEK_END);
    f.size = end > 0 ? (uint32_t)end : 0;
    memset(&f.counts, 0, sizeof(f.counts));
    const char *cut = getenv("ESPSIM_CUT_AFTER");
    f.cut = cut && *cut ? strtol(cut, NULL, 0) : -1;
    f.exit_on_cut = f.cut >= 0;
    f.dead = false;
    f.flip_addr = -1;
    return ESP_OK;
}

void host_flash_close(void) {
    if (f.fd >= 0) {
        close(f.fd);
    }
    f.fd = -1;
}

uint32_t host_flash_size(void) {
    return f.size;
}

static bool begin_op(bool *half) {
    *half = false;
    if (f.dead) {
        return false;
    }
    if (f.cut == 0) {
        f.dead = true;
        *half = true;
    } else if (f.cut > 0) {
        f.cut--;
    }
    return true;
}

// The interrupted operation is half done: with the switch armed from the environment the
// simulated device stops here, else (C tests) the operation fails and so does all that follows.
static esp_err_t power_cut(const char *what, uint32_t addr) {
    if (f.exit_on_cut) {
        fprintf(stderr, "PowerCut: power cut during %s at 0x%x\n", what, (unsigned)addr);
        fflush(NULL);
        _exit(3);
    }
    return ESP_ERR_FLASH_OP_FAIL;
}

static esp_err_t raw_io(bool write, uint32_t addr, void *buf, size_t n) {
    ssize_t r = write ? pwrite(f.fd, buf, n, addr) : pread(f.fd, buf, n, addr);
    return r == (ssize_t)n ? ESP_OK : ESP_FAIL;
}

EMULATION esp_err_t host_flash_read(uint32_t addr, void *buf, size_t n) {
    if (f.dead) {
        return ESP_ERR_FLASH_OP_FAIL;
    }
    if (addr > f.size || n > f.size - addr) {
        return ESP_ERR_INVALID_ARG;
    }
    f.counts.read_ops++;
    f.counts.read_bytes += n;
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
    return half ? power_cut(counter == &f.counts.erase_64k ? "erase_64k" : "erase_4k", addr)
        : ESP_OK;
}

// esp_flash_erase_region(): a 64 KB block erase where aligned and long enough, else 4 KB.
esp_err_t host_flash_erase_region(uint32_t start, uint32_t len) {
    if (start > f.size || len > f.size - start || start % SECTOR || len % SECTOR) {
        return ESP_ERR_INVALID_ARG;
    }
    while (len > 0) {
        esp_err_t err;
        if (start % BLOCK == 0 && len >= BLOCK) {
            err = flash_erase(start, BLOCK, &f.counts.erase_64k);
            start += BLOCK;
            len -= BLOCK;
        } else {
            err = flash_erase(start, SECTOR, &f.counts.erase_4k);
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
EMULATION esp_err_t host_flash_program(uint32_t addr, const uint8_t *data, size_t len) {
    if (addr > f.size || len > f.size - addr) {
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
        f.counts.program_pages++;
        f.counts.program_bytes += n;
        if (f.flip_addr >= addr && f.flip_addr < (long)(addr + n)) {
            page[f.flip_addr - addr] ^= f.flip_mask; // the cell does not hold what it was given
            f.flip_addr = -1;
            if (raw_io(true, addr, page, n) != ESP_OK) {
                return ESP_FAIL;
            }
        }
        if (half) {
            return power_cut("page program", addr);
        }
        addr += n;
        data += n;
        len -= n;
    }
    return ESP_OK;
}

const ota_host_counts_t *ota_host_counts(void) {
    return &f.counts;
}

void ota_host_reset_counts(void) {
    memset(&f.counts, 0, sizeof(f.counts));
}

void ota_host_flip_after_program(uint32_t addr, uint8_t mask) {
    f.flip_addr = addr;
    f.flip_mask = mask;
}

void ota_host_cut_after(long n) {
    f.cut = n;
    f.dead = false;
    f.exit_on_cut = false;
}

bool ota_host_powered(void) {
    return !f.dead;
}

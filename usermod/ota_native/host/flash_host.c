// The simulated device under the host backend: its SPI flash chip, as ESP-IDF's
// components/spi_flash/esp_flash_api.c drives it, over a flash image file, and what
// "<flash>.state" (written by the simulator, sim/espsim/device.py) says of the device: its
// chip and revision, the running app, rollback support. Flash physics as sim/espsim/flash.py:
// erase to 0xFF, page programs only clear bits, 64 KB block erases where the range allows. The
// power-cut switch lives here, and a weak cell for tests: a bit that flips after it is
// programmed. And the device-wide ESP-IDF functions: esp_restart() (esp_system.h),
// esp_cpu_dbgr_is_attached() (esp_cpu.h), esp_err_to_name() (esp_err.h).
// Uses only soc_host.c (see flash_host.h).

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esp_cpu.h"
#include "esp_err.h"
#include "esp_system.h"
#include "flash_host.h"

#define PAGE (256u)

static struct {
    int fd;
    uint32_t size;
    host_flash_counts_t counts;
    long cut;
    bool dead;
    bool exit_on_cut; // armed by $ESPSIM_CUT_AFTER: the process ends, as a chip loses power
    long flip_addr; // -1: no weak cell
    uint8_t flip_mask;
} f = { .fd = -1, .cut = -1, .flip_addr = -1 };

static void flash_close(void) {
    if (f.fd >= 0) {
        close(f.fd);
    }
    f.fd = -1;
}

static esp_err_t flash_open(const char *path) {
    flash_close();
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

host_flash_counts_t *host_flash_counts(void) {
    return &f.counts;
}

void host_flash_flip_after_program(uint32_t addr, uint8_t mask) {
    f.flip_addr = addr;
    f.flip_mask = mask;
}

void host_flash_cut_after(long n) {
    f.cut = n;
    f.dead = false;
    f.exit_on_cut = false;
}

bool host_flash_powered(void) {
    return !f.dead;
}

// ---- The device

host_device_t host_device = { .idf = 0x0505 };
static bool opened;

// <flash>.state: key=value lines (sim/espsim/device.py)
static uint32_t read_state(void) {
    uint32_t running = 0;
    bool rev_given = false;
    host_device.chip = host_chip_by_name("esp32");
    host_device.chip_rev = 0;
    host_device.rollback = true;
    char p[512], line[128];
    snprintf(p, sizeof(p), "%s.state", host_device.path);
    FILE *f = fopen(p, "r");
    while (f && fgets(line, sizeof(line), f)) {
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
            host_device.chip = host_chip_by_name(val);
        } else if (strcmp(line, "chip_rev") == 0) {
            host_device.chip_rev = strtoul(val, NULL, 0);
            rev_given = true;
        } else if (strcmp(line, "rollback") == 0) {
            host_device.rollback = strtoul(val, NULL, 0) != 0;
        }
    }
    if (f) {
        fclose(f);
    }
    const host_chip_t *chip = host_device.chip;
    host_device.chip_id = chip ? chip->chip_id : 0xFFFF; // ESP_CHIP_ID_INVALID
    if (!rev_given) {
        host_device.chip_rev = chip ? chip->default_rev : 0;
    }
    return running;
}

esp_err_t host_device_open(const char *path) {
    host_device_close();
    snprintf(host_device.path, sizeof(host_device.path), "%s", path);
    esp_err_t err = flash_open(path);
    if (err != ESP_OK) {
        return err;
    }
    opened = true;
    host_device.debugger = false;
    const char *idf = getenv("OTA_HOST_IDF");
    host_device.idf = idf && strncmp(idf, "5.3", 3) == 0 ? 0x0503
        : idf && strncmp(idf, "5.4", 3) == 0 ? 0x0504 : 0x0505;
    host_device.running = read_state();
    return ESP_OK;
}

void host_device_close(void) {
    flash_close();
    opened = false;
    host_device.running = 0;
}

bool host_device_ready(void) {
    if (!opened) {
        const char *path = getenv("ESPSIM_FLASH");
        if (path == NULL || host_device_open(path) != ESP_OK) {
            fprintf(stderr, "ota_host: set ESPSIM_FLASH to a simulated flash image\n");
            return false;
        }
    }
    return true;
}

bool esp_cpu_dbgr_is_attached(void) {
    return host_device.debugger;
}

// esp_ota_ops.h's codes, by value: that header declares app_update's functions, which are
// above this file (as ESP-IDF's generated esp_err_to_name.c has them all, by value too).
#define OTA_ERR(n) (0x1500 + (n))

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
        {OTA_ERR(1), "ESP_ERR_OTA_PARTITION_CONFLICT"},
        {OTA_ERR(2), "ESP_ERR_OTA_SELECT_INFO_INVALID"},
        {OTA_ERR(3), "ESP_ERR_OTA_VALIDATE_FAILED"},
        {OTA_ERR(4), "ESP_ERR_OTA_SMALL_SEC_VER"},
        {OTA_ERR(5), "ESP_ERR_OTA_ROLLBACK_FAILED"},
        {OTA_ERR(6), "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"},
        {ESP_ERR_IMAGE_INVALID, "ESP_ERR_IMAGE_INVALID"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].code == code) {
            return names[i].name;
        }
    }
    return "UNKNOWN ERROR";
}

// The app ends here. The simulator's bootloader decides what runs next (mpota sim boot, or
// machine.reset() in the simulated device).
void esp_restart(void) {
    if (host_device.restart_hook) {
        host_device.restart_hook();
    }
    char p[512];
    snprintf(p, sizeof(p), "%s.state", host_device.path);
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

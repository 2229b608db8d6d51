// What the fuzz targets share: the simulated device they run on, exact-size copies of the
// pieces they feed (so that AddressSanitizer sees a read or write one byte past a piece), a
// small PRNG for piece sizes, and FUZZ_CHECK(), which ends the run with a message when an
// invariant of the code under test does not hold (libFuzzer then saves the input).
#ifndef OTA_FUZZ_COMMON_H
#define OTA_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ota_host.h"

#define FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "invariant broken: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort(); \
        } \
    } while (0)

// The device: $FUZZ_FLASH (a flash image made by make_seeds.py, with its .state) copied to a
// private file in $FUZZ_WORK (default: its directory), so that fuzzers running at once do not
// share one; fuzz_device_reset() puts the copy back as it was (the session target writes to
// it) and reopens the host backend on it (no esp_ota handle left from a run before).
static struct {
    char path[512];
    uint8_t *pristine;
    size_t len;
    int fd;
} fuzz_dev;

static inline void fuzz_copy(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "fuzz: cannot copy %s to %s\n", from, to);
        exit(2);
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        fwrite(buf, 1, n, out);
    }
    fclose(in);
    fclose(out);
}

static inline void fuzz_device_remove(void) {
    char s[600];
    snprintf(s, sizeof(s), "%s.state", fuzz_dev.path);
    unlink(s);
    unlink(fuzz_dev.path);
}

static inline void fuzz_device_reset(void) {
    if (pwrite(fuzz_dev.fd, fuzz_dev.pristine, fuzz_dev.len, 0) != (ssize_t)fuzz_dev.len
        || ota_host_open(fuzz_dev.path) != ESP_OK) {
        fprintf(stderr, "fuzz: cannot reopen the simulated device %s\n", fuzz_dev.path);
        abort();
    }
}

static inline void fuzz_device_open(void) {
    const char *src = getenv("FUZZ_FLASH");
    if (src == NULL) {
        fprintf(stderr, "fuzz: set FUZZ_FLASH to the flash.bin that make_seeds.py made\n");
        exit(2);
    }
    const char *work = getenv("FUZZ_WORK"), *slash = strrchr(src, '/');
    char dir[480] = ".";
    if (work) {
        snprintf(dir, sizeof(dir), "%s", work);
    } else if (slash) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - src), src);
    }
    snprintf(fuzz_dev.path, sizeof(fuzz_dev.path), "%s/device-%d.bin", dir, (int)getpid());
    fuzz_copy(src, fuzz_dev.path);
    char s[600], d[600];
    snprintf(s, sizeof(s), "%s.state", src);
    snprintf(d, sizeof(d), "%s.state", fuzz_dev.path);
    fuzz_copy(s, d);
    atexit(fuzz_device_remove);
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    fuzz_dev.len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    fuzz_dev.pristine = malloc(fuzz_dev.len);
    if (fread(fuzz_dev.pristine, 1, fuzz_dev.len, f) != fuzz_dev.len) {
        exit(2);
    }
    fclose(f);
    fuzz_dev.fd = open(fuzz_dev.path, O_RDWR);
    if (fuzz_dev.fd < 0) {
        exit(2);
    }
    fuzz_device_reset();
}

// xorshift32: piece sizes from a seed in the input
static inline uint32_t fuzz_rand(uint32_t *s) {
    uint32_t x = *s ? *s : 0x9E3779B9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

// A piece size: mostly small (size fields cut anywhere), sometimes a few KB.
static inline size_t fuzz_piece(uint32_t *s, size_t max) {
    uint32_t r = fuzz_rand(s);
    size_t n;
    switch (r & 3) {
        case 0:
            n = 1 + (r >> 8) % 4;
            break;
        case 1:
            n = 1 + (r >> 8) % 64;
            break;
        case 2:
            n = 1 + (r >> 8) % 4096;
            break;
        default:
            n = 1 + (r >> 8) % 20000;
            break;
    }
    return n < max ? n : max;
}

// An exact-size heap copy of a piece (free() it).
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    if (n) {
        memcpy(c, p, n);
    }
    return c;
}

static inline uint32_t fuzz_u32(const uint8_t *p) {
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fuzz_u64(const uint8_t *p) {
    return fuzz_u32(p) | (uint64_t)fuzz_u32(p + 4) << 32;
}

#endif

// The C tests' harness: CHECK()/CHECK_EQ(), which end the current test on failure and count it,
// and whole files read into memory. Included once by each test program.
#ifndef OTA_TEST_CHECK_H
#define OTA_TEST_CHECK_H

#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static const char *current;

#define CHECK(cond) \
    do { \
        if (!(cond)) { \
            printf("FAIL %s: %s:%d: %s\n", current, __FILE__, __LINE__, #cond); \
            failures++; \
            return; \
        } \
    } while (0)

#define CHECK_EQ(a, b) \
    do { \
        long long a_ = (long long)(a), b_ = (long long)(b); \
        if (a_ != b_) { \
            printf("FAIL %s: %s:%d: %s == %s (0x%llx != 0x%llx)\n", current, __FILE__, \
                __LINE__, #a, #b, a_, b_); \
            failures++; \
            return; \
        } \
    } while (0)

typedef struct {
    uint8_t *data;
    size_t len;
} blob_t;

static blob_t load(const char *path) {
    blob_t b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    b.len = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = malloc(b.len ? b.len : 1);
    if (fread(b.data, 1, b.len, f) != b.len) {
        exit(2);
    }
    fclose(f);
    return b;
}


typedef struct {
    const char *name;
    void (*fn)(void);
} test_t;

// Run the tests named in argv[2..] (all of them when none is named): "ok NAME" or
// "not ok NAME" for each, then the totals. Returns the exit status.
static int run_tests(const test_t *tests, size_t n, int argc, char **argv) {
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        bool wanted = argc == 2;
        for (int a = 2; a < argc; a++) {
            wanted |= strcmp(argv[a], tests[i].name) == 0;
        }
        if (!wanted) {
            continue;
        }
        current = tests[i].name;
        int before = failures;
        tests[i].fn();
        printf("%s %s\n", failures == before ? "ok" : "not ok", current);
        ran++;
    }
    printf("%d tests, %d failures\n", ran, failures);
    return failures ? 1 : 0;
}

#endif

/*
 * Reference run for bench_simulate.py: executes a GC-like op list on the real kernel and
 * times only the op loop (system calls and page touches), not reading or reporting.
 *
 * Input lines (addresses relative to a fixed base, decimal):
 *   M ADDR LEN PROT      mmap private anonymous fixed noreserve
 *   P ADDR LEN PROT      mprotect
 *   T ADDR WRITE         touch (WRITE 1: write a byte, 0: read)
 *   D ADDR LEN           madvise MADV_DONTNEED
 * Output: "SECONDS CPU_SECONDS LIVE_VMAS_IN_RANGE ERRORS" (wall and process CPU time).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define BASE 0x200000000000ULL

struct op {
    char kind;
    uint64_t a, b, c;
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: opsrun OPS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    size_t n = 0, cap = 1 << 20;
    struct op *ops = malloc(cap * sizeof *ops);
    char line[256];
    uint64_t lo = UINT64_MAX, hi = 0;
    while (fgets(line, sizeof line, f)) {
        if (n == cap) {
            cap *= 2;
            ops = realloc(ops, cap * sizeof *ops);
        }
        struct op *o = &ops[n];
        memset(o, 0, sizeof *o);
        unsigned long long a = 0, b = 0, c = 0;
        if (sscanf(line, "%c %llu %llu %llu", &o->kind, &a, &b, &c) < 2)
            continue;
        o->a = a + BASE;
        o->b = b;
        o->c = c;
        if (o->kind == 'M') {
            if (o->a < lo)
                lo = o->a;
            if (o->a + o->b > hi)
                hi = o->a + o->b;
        }
        n++;
    }
    fclose(f);
    long errors = 0;
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (size_t i = 0; i < n; i++) {
        struct op *o = &ops[i];
        switch (o->kind) {
        case 'M':
            if (mmap((void *)o->a, o->b, (int)o->c,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
                errors++;
            break;
        case 'P':
            if (mprotect((void *)o->a, o->b, (int)o->c))
                errors++;
            break;
        case 'T':
            if (o->b)
                *(volatile char *)o->a = 1;
            else
                (void)*(volatile char *)o->a;
            break;
        case 'D':
            if (madvise((void *)o->a, o->b, MADV_DONTNEED))
                errors++;
            break;
        }
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) / 1e9;
    /* Count the VMAs in the heap's range. */
    FILE *m = fopen("/proc/self/maps", "r");
    long vmas = 0;
    if (m) {
        while (fgets(line, sizeof line, m)) {
            unsigned long long s, e;
            if (sscanf(line, "%llx-%llx", &s, &e) == 2 && s >= lo && e <= hi)
                vmas++;
        }
        fclose(m);
    }
    printf("%.4f %.4f %ld %ld\n", secs, cpu, vmas, errors);
    return 0;
}

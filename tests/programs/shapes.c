/*
 * Shapes for the VMA budget tests, each in a fresh anonymous range at a fixed address
 * far from everything else (MAP_FIXED_NOREPLACE), so nothing outside can join it.
 *
 *   shapes checkerboard V   V VMAs: page i is ---p for even i, rw-p (written) for odd i
 *   shapes dontdump V       V rw-p pages, MADV_DONTDUMP on every other one
 *   shapes hugepage V       V 2 MiB pieces, MADV_HUGEPAGE / MADV_NOHUGEPAGE alternating
 *   shapes arenas T         T threads that each malloc (glibc makes per-thread arenas)
 *   shapes dotnet N         what .NET leaves: a 256 GiB PROT_NONE GC regions reservation
 *                           with committed pieces, and N memfd:doublemapper views (RW
 *                           and RX mappings of one memfd)
 *
 * Prints "RESERVED <lo> <hi>" (hex) when done, then sleeps until killed (at most 10 min).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BASE ((char *)0x200000000000UL)

static void *xmap(char *at, size_t len, int prot) {
    char *p = mmap(at, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                   MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || p != at) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static pthread_barrier_t barrier;

static void *worker(void *arg) {
    (void)arg;
    void *volatile m = malloc(1000);
    memset(m, 1, 1000);
    pthread_barrier_wait(&barrier);
    pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: shapes MODE N\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *lo = BASE, *hi = BASE;
    alarm(600);
    if (strcmp(mode, "checkerboard") == 0) {
        hi = lo + n * page;
        xmap(lo, n * page, PROT_NONE);
        for (long i = 1; i < n; i += 2) {
            if (mprotect(lo + i * page, page, PROT_READ | PROT_WRITE) != 0) {
                perror("mprotect");
                return 1;
            }
            lo[i * page] = 1;
        }
    } else if (strcmp(mode, "dontdump") == 0) {
        hi = lo + n * page;
        xmap(lo, n * page, PROT_READ | PROT_WRITE);
        for (long i = 1; i < n; i += 2)
            if (madvise(lo + i * page, page, MADV_DONTDUMP) != 0) {
                perror("madvise");
                return 1;
            }
    } else if (strcmp(mode, "hugepage") == 0) {
        size_t huge = 2UL << 20;
        hi = lo + n * huge;
        xmap(lo, n * huge, PROT_READ | PROT_WRITE);
        for (long i = 0; i < n; i++)
            if (madvise(lo + i * huge, huge, i % 2 ? MADV_NOHUGEPAGE : MADV_HUGEPAGE) != 0) {
                perror("madvise");
                return 1;
            }
    } else if (strcmp(mode, "arenas") == 0) {
        pthread_t t;
        pthread_barrier_init(&barrier, NULL, (unsigned)n + 1);
        for (long i = 0; i < n; i++)
            if (pthread_create(&t, NULL, worker, NULL) != 0) {
                perror("pthread_create");
                return 1;
            }
        pthread_barrier_wait(&barrier);
    } else if (strcmp(mode, "dotnet") == 0) {
        size_t regions = 256UL << 30;
        hi = lo + regions;
        xmap(lo, regions, PROT_NONE);
        for (long i = 0; i < 64; i++) {
            char *piece = lo + i * (4UL << 20);
            mprotect(piece, 256 * 1024, PROT_READ | PROT_WRITE);
            piece[0] = 1;
        }
        int fd = memfd_create("doublemapper", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)(n * 2 * page)) != 0) {
            perror("memfd");
            return 1;
        }
        for (long i = 0; i < n; i++) {
            /* an RX view and, elsewhere, an RW view of the same page of the memfd */
            off_t off = (off_t)(i * page);
            if (mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, off) == MAP_FAILED ||
                mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off) == MAP_FAILED) {
                perror("mmap memfd");
                return 1;
            }
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("RESERVED %lx %lx\n", (unsigned long)lo, (unsigned long)hi);
    fflush(stdout);
    for (;;)
        pause();
}

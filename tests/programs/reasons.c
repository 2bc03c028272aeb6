/*
 * Leaves two adjacent anonymous VMAs that look identical in /proc/PID/maps (same
 * permissions, anonymous) but stay separate for exactly one reason, chosen by argv[1]:
 *
 *   dontdump   VmFlags differ by dd (MADV_DONTDUMP on the right page), nothing written
 *   anon_name  PR_SET_VMA_ANON_NAME "left" and "right", nothing written
 *   mempolicy  mbind(MPOL_BIND, node 0) on the left, MPOL_PREFERRED node 0 on the right
 *   faulted    both pages written while their flags differed, so each got its own
 *              anon_vma; then the flags were made equal again (distinct anon_vmas)
 *   unfaulted  only the right page written while the flags differed; then made equal.
 *              Kernels before 6.16 keep the two apart; 6.16+ merge them.
 *   gc N       a GC-heap-like reservation: 2N+16 pages PROT_NONE; the even pages of the
 *              first 2N are committed (mprotect RW) and written one by one, each getting
 *              its own anon_vma (its neighbours have none); then the odd pages, each of
 *              which merges into the VMA on its left but not into the one on its right
 *              (different anon_vmas). Leaves N adjacent rw-p VMAs of 2 pages and the
 *              PROT_NONE tail. Prints "RESERVED <start> <end>" instead of PAIR.
 *
 * The two pages sit inside a PROT_NONE fence so that they cannot merge with anything
 * else. All mappings use MAP_NORESERVE so that VM_ACCOUNT is the same everywhere.
 * Prints "PAIR <hex address of the boundary>" and waits (at most 120 s) to be killed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif
#define MPOL_PREFERRED 1
#define MPOL_BIND 2

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void set_policy(char *addr, size_t len, int mode)
{
    unsigned long nodemask = 1; /* node 0 */
    if (syscall(SYS_mbind, addr, len, mode, &nodemask, 8 * sizeof nodemask, 0) != 0)
        die("mbind");
}

int main(int argc, char **argv)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const char *mode = argc > 1 ? argv[1] : "";
    alarm(120);

    if (strcmp(mode, "gc") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 1000;
        size_t len = (size_t)(2 * n + 16) * page;
        /* one unmapped page on each side keeps it apart from other anonymous memory */
        char *g = mmap(NULL, len + 2 * page, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (g == MAP_FAILED)
            die("mmap reservation");
        char *r = g + page;
        if (munmap(g, page) != 0 || munmap(r + len, page) != 0)
            die("munmap guard");
        for (int odd = 0; odd < 2; odd++) {
            for (long i = odd; i < 2 * n; i += 2) {
                if (mprotect(r + i * page, page, PROT_READ | PROT_WRITE) != 0)
                    die("mprotect");
                r[i * page] = 1;
            }
        }
        printf("RESERVED %lx %lx\n", (unsigned long)r, (unsigned long)(r + len));
        fflush(stdout);
        for (;;)
            pause();
    }

    char *fence = mmap(NULL, 64 * page, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (fence == MAP_FAILED)
        die("mmap fence");
    char *p = fence + 16 * page;
    if (mmap(p, 2 * page, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != p)
        die("mmap pair");
    char *right = p + page;

    if (strcmp(mode, "dontdump") == 0) {
        if (madvise(right, page, MADV_DONTDUMP) != 0)
            die("madvise");
    } else if (strcmp(mode, "anon_name") == 0) {
        if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, p, page, "left") != 0)
            die("prctl left");
        if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, right, page, "right") != 0)
            die("prctl right");
    } else if (strcmp(mode, "mempolicy") == 0) {
        set_policy(p, page, MPOL_BIND);
        set_policy(right, page, MPOL_PREFERRED);
    } else if (strcmp(mode, "faulted") == 0 || strcmp(mode, "unfaulted") == 0) {
        /* While the right page has VM_DONTDUMP the two are not anon_vma_compatible,
         * so a write fault on each side allocates a separate anon_vma. */
        if (madvise(right, page, MADV_DONTDUMP) != 0)
            die("madvise dontdump");
        if (strcmp(mode, "faulted") == 0)
            p[0] = 1;
        right[0] = 1;
        if (madvise(right, page, MADV_DODUMP) != 0)
            die("madvise dodump");
    } else {
        fprintf(stderr, "usage: %s dontdump|anon_name|mempolicy|faulted|unfaulted\n", argv[0]);
        return 2;
    }
    printf("PAIR %lx\n", (unsigned long)right);
    fflush(stdout);
    for (;;)
        pause();
}

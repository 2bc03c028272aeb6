/*
 * One pair of adjacent VMAs per blind spot of /proc: the two look mergeable in
 * /proc/PID/maps and smaps, and only the kernel's own view tells why they are apart.
 *
 *   moved    a written anonymous page moved by mremap next to a fresh one: its page
 *            offset is that of its old address (/proc prints 0 for both)
 *   emptied  two pages written while their flags differed (distinct anon_vmas), then
 *            the left one emptied with MADV_DONTNEED: it holds no pages yet keeps its
 *            anon_vma
 *   twice    two pages of one file mapped through two open() calls
 *   fork     a page written, then fork; the child maps a fresh page next to it: the
 *            child's copy is linked to two anon_vmas (a fork child's chain)
 *
 * Every pair sits inside its own PROT_NONE fence. Prints "PAIR <case> <hex boundary>
 * <pid>" per case (the fork case's pid is the child's), then "READY", and waits (at
 * most 120 s) to be killed. argv[1]: a folder for the file of the "twice" case.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096UL
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static char *fence(void)
{
    char *p = mmap(NULL, 8 * PG, PROT_NONE, ANON, -1, 0);
    if (p == MAP_FAILED)
        die("mmap fence");
    return p;
}

static void fixed(char *at, int prot, int flags, int fd, off_t off)
{
    if (mmap(at, PG, prot, flags | MAP_FIXED, fd, off) != at)
        die("mmap fixed");
}

static void pair(const char *name, char *boundary)
{
    printf("PAIR %s %#lx %d\n", name, (unsigned long)boundary, (int)getpid());
}

int main(int argc, char **argv)
{
    char path[4096];
    char *f, *src;
    int fd1, fd2, sync[2];
    char c;
    pid_t child;

    if (argc != 2)
        return 2;
    alarm(120);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* moved */
    f = fence();
    src = mmap(NULL, PG, RW, ANON, -1, 0);
    if (src == MAP_FAILED)
        die("mmap");
    src[0] = 1;
    if (mremap(src, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, f + 2 * PG) != f + 2 * PG)
        die("mremap");
    fixed(f + 3 * PG, RW, ANON, -1, 0);
    pair("moved", f + 3 * PG);

    /* emptied */
    f = fence();
    if (mmap(f + 2 * PG, 2 * PG, RW, ANON | MAP_FIXED, -1, 0) != f + 2 * PG)
        die("mmap");
    if (madvise(f + 3 * PG, PG, MADV_DONTDUMP)) /* two VMAs, neither faulted */
        die("madvise");
    f[2 * PG] = 1; /* each gets its own anon_vma */
    f[3 * PG] = 1;
    if (madvise(f + 3 * PG, PG, MADV_DODUMP))
        die("madvise");
    if (madvise(f + 2 * PG, PG, MADV_DONTNEED))
        die("madvise");
    pair("emptied", f + 3 * PG);

    /* twice */
    snprintf(path, sizeof path, "%s/twice.bin", argv[1]);
    fd1 = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd1 < 0 || ftruncate(fd1, 2 * PG))
        die("open");
    fd2 = open(path, O_RDWR);
    if (fd2 < 0)
        die("open");
    f = fence();
    fixed(f + 2 * PG, PROT_READ, MAP_SHARED, fd1, 0);
    fixed(f + 3 * PG, PROT_READ, MAP_SHARED, fd2, PG);
    pair("twice", f + 3 * PG);

    /* fork */
    f = fence();
    fixed(f + 2 * PG, RW, ANON, -1, 0);
    f[2 * PG] = 1;
    if (pipe(sync))
        die("pipe");
    child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        alarm(120);
        fixed(f + 3 * PG, RW, ANON, -1, 0);
        pair("fork", f + 3 * PG);
        if (write(sync[1], "x", 1) != 1)
            die("write");
        for (;;)
            pause();
    }
    if (read(sync[0], &c, 1) != 1) /* the child's line comes before READY */
        die("read");
    puts("READY");
    for (;;)
        pause();
}

/*
 * A process with many VMAs: maps a PROT_NONE region of N pages and makes every other
 * page read-write, so that each page is a VMA of its own (adjacent VMAs differ in
 * protection and cannot merge). Prints "ready N" and waits until stdin closes.
 *
 * usage: fragment VMAS
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long want = argc > 1 ? atol(argv[1]) : 2000000;
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)want * (size_t)page;
    char *base = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (long i = 1; i < want; i += 2) {
        if (mprotect(base + i * page, (size_t)page, PROT_READ | PROT_WRITE) != 0) {
            fprintf(stderr, "mprotect failed at page %ld: ", i);
            perror("");
            return 1;
        }
    }
    printf("ready %ld\n", want);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}

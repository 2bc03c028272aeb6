/*
 * Mapping churn for the recorder's benchmark and tests.
 *
 *   churn N
 *
 * Prints "READY", waits for a byte on stdin, then does N cycles of: mmap two private
 * anonymous pages at a fixed address far from everything else (so that the VMA is new
 * each time and merges with nothing), write to the first page, mprotect the second
 * read-only, munmap both. Prints "DONE <seconds the cycles took>" and exits.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define AT ((char *)0x400000000000UL)
#define PAGE 4096UL

int main(int argc, char **argv)
{
	struct timespec a, b;
	long n;
	char c;

	if (argc != 2 || (n = atol(argv[1])) <= 0) {
		fprintf(stderr, "usage: churn N\n");
		return 2;
	}
	printf("READY\n");
	fflush(stdout);
	if (read(0, &c, 1) != 1)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		char *p = mmap(AT, 2 * PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != AT) {
			perror("mmap");
			return 1;
		}
		*(volatile char *)p = 1;
		if (mprotect(p + PAGE, PAGE, PROT_READ) || munmap(p, 2 * PAGE)) {
			perror("mprotect/munmap");
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("DONE %.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	fflush(stdout);
	return 0;
}

/* frag3: a known fragmenting pattern in three functions, for record and replay.
 *
 *   frag3 [A B C [wait]]
 *
 * stripe_protections(A): in a PROT_NONE reservation, every other page made read-write
 *     and written: 2*A VMAs split by protection (mprotect).
 * commit_out_of_order(B): in another reservation, 4-page pieces made read-write and
 *     written in an order that is not the address order (odd pieces first, then even):
 *     each odd piece gets its own anon_vma at its first write, and an even piece made
 *     read-write later merges with the odd piece before it but not with the one after
 *     (distinct anon_vmas): about B/2 VMAs, each split from the next by anon_vma
 *     (mprotect, then the fault).
 * mark_dontfork(C): an anonymous read-write mapping of 2*C pages, every other page
 *     advised MADV_DONTFORK: 2*C VMAs split by VmFlags (madvise).
 *
 * Defaults 3000, 2000, 700: the three sites make clearly different numbers of VMAs
 * (about 6000, 1400 and 1000). Built -O0 -fno-inline -fno-omit-frame-pointer so that
 * each call is made from the function named here. Prints "done" and exits normally;
 * with "wait", it prints "ready" and waits for a line on stdin before it starts, and
 * waits for another after "done" (so that a test can snapshot it and attach strace).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL

static void die(const char *what)
{
	perror(what);
	exit(2);
}

__attribute__((noinline)) static void stripe_protections(long n)
{
	char *r = mmap(NULL, 2 * n * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (r == MAP_FAILED)
		die("mmap stripe");
	for (long i = 0; i < n; i++) {
		char *p = r + 2 * i * PAGE;
		if (mprotect(p, PAGE, PROT_READ | PROT_WRITE))
			die("mprotect stripe");
		p[0] = 1;
	}
}

__attribute__((noinline)) static void commit_out_of_order(long n)
{
	unsigned long piece = 4 * PAGE;
	char *r = mmap(NULL, n * piece, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (r == MAP_FAILED)
		die("mmap commit");
	for (int pass = 1; pass >= 0; pass--) {
		for (long i = pass; i < n; i += 2) {
			char *p = r + i * piece;
			if (mprotect(p, piece, PROT_READ | PROT_WRITE))
				die("mprotect commit");
			p[0] = 1;
		}
	}
}

__attribute__((noinline)) static void mark_dontfork(long n)
{
	char *r = mmap(NULL, 2 * n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (r == MAP_FAILED)
		die("mmap dontfork");
	for (long i = 0; i < n; i++) {
		if (madvise(r + 2 * i * PAGE, PAGE, MADV_DONTFORK))
			die("madvise");
	}
}

int main(int argc, char **argv)
{
	long a = argc > 1 ? atol(argv[1]) : 3000;
	long b = argc > 2 ? atol(argv[2]) : 2000;
	long c = argc > 3 ? atol(argv[3]) : 700;
	int wait = argc > 4 && strcmp(argv[4], "wait") == 0;
	char line[16];

	alarm(600);
	if (wait) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 1;
	}
	stripe_protections(a);
	commit_out_of_order(b);
	mark_dontfork(c);
	printf("done\n");
	fflush(stdout);
	if (wait && !fgets(line, sizeof(line), stdin))
		return 1;
	return 0;
}

/*
 * Known mapping calls for the recorder's tests (build it -O0 -fno-omit-frame-pointer
 * -fno-inline -pthread, so that its stacks can be walked and its functions named).
 *
 *   recordme FILE
 *
 * Prints "READY", waits for a byte on stdin, then, each call in its own function:
 *   main thread, at BASE (4 pages, fixed): mmap, write-touch page 0 twice and page 1
 *   once, mprotect page 1 read-only, madvise page 2 DONTNEED, prctl(PR_SET_VMA) names
 *   the range "recordme", munmap page 3, a failing munmap (BASE + 1: EINVAL); mmap of
 *   FILE read-only (private); a thread that maps and unmaps one page at BASE + 1 MiB;
 *   a forked child that maps, touches and unmaps one page at BASE + 2 MiB and exits 0.
 * Prints "THREAD <tid>" and "CHILD <pid>" on the way and "DONE" at the end, then exits.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

#define BASE ((char *)0x300000000000UL)
#define PAGE 4096UL

void *do_mmap(void *at, size_t len, int prot, int flags, int fd)
{
	return mmap(at, len, prot, flags, fd, 0);
}

int do_mprotect(void *at, size_t len, int prot) { return mprotect(at, len, prot); }
int do_madvise(void *at, size_t len, int advice) { return madvise(at, len, advice); }
int do_munmap(void *at, size_t len) { return munmap(at, len); }

int do_prctl(void *at, size_t len, const char *name)
{
	return prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)at, len,
		     (unsigned long)name);
}

void touch(char *p) { *(volatile char *)p = 1; }

void *thread_work(void *arg)
{
	char *p = do_mmap(BASE + (1 << 20), PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1);
	printf("THREAD %d\n", gettid());
	fflush(stdout);
	do_munmap(p, PAGE);
	return arg;
}

void child_work(void)
{
	char *p = do_mmap(BASE + (2 << 20), PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1);
	touch(p);
	do_munmap(p, PAGE);
	_exit(0);
}

void work(const char *path)
{
	char *p = do_mmap(BASE, 4 * PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1);
	pthread_t t;
	pid_t child;
	int fd;

	if (p != BASE) {
		perror("mmap");
		exit(1);
	}
	touch(p);
	touch(p);
	touch(p + PAGE);
	do_mprotect(p + PAGE, PAGE, PROT_READ);
	do_madvise(p + 2 * PAGE, PAGE, MADV_DONTNEED);
	do_prctl(p, 4 * PAGE, "recordme");
	do_munmap(p + 3 * PAGE, PAGE);
	do_munmap(p + 1, PAGE);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	do_mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd);
	close(fd);
	pthread_create(&t, NULL, thread_work, NULL);
	pthread_join(t, NULL);
	child = fork();
	if (child == 0)
		child_work();
	printf("CHILD %d\n", child);
	fflush(stdout);
	waitpid(child, NULL, 0);
}

int main(int argc, char **argv)
{
	char c;

	if (argc != 2) {
		fprintf(stderr, "usage: recordme FILE\n");
		return 2;
	}
	printf("READY\n");
	fflush(stdout);
	if (read(0, &c, 1) != 1)
		return 1;
	work(argv[1]);
	printf("DONE\n");
	fflush(stdout);
	return 0;
}

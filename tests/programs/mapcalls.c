/*
 * Known mapping calls for the strace recorder's tests, each from a function of its own
 * (build with -O0 -fno-inline -g so that the -k frames name them):
 *
 *   reserve_region   mmap 1 MiB PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE
 *   commit_region    mprotect the first 64 KiB read-write, and write its first page
 *   name_region      prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, first 64 KiB, "mapcalls")
 *                    (EINVAL on kernels without CONFIG_ANON_VMA_NAME: still a call)
 *   trim_region      munmap the last 64 KiB
 *   thread_main      in a second thread: mmap 7 pages read-write, munmap them
 *   child_main       in a fork child: munmap the second 64 KiB, then _exit(7)
 *
 * Prints "DONE <hex address of the region>" and exits 0.
 */
#define _GNU_SOURCE
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

#define KiB 1024UL
#define REGION (1024 * KiB)

static char *reserve_region(void)
{
    void *p = mmap(NULL, REGION, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static void commit_region(char *p)
{
    if (mprotect(p, 64 * KiB, PROT_READ | PROT_WRITE) != 0) {
        perror("mprotect");
        exit(1);
    }
    p[0] = 1;
}

static void name_region(char *p)
{
    prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, 64 * KiB, "mapcalls");
}

static void trim_region(char *p)
{
    munmap(p + REGION - 64 * KiB, 64 * KiB);
}

static void *thread_main(void *arg)
{
    (void)arg;
    void *q = mmap(NULL, 7 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (q != MAP_FAILED)
        munmap(q, 7 * 4096);
    return NULL;
}

static void child_main(char *p)
{
    munmap(p + 64 * KiB, 64 * KiB);
    _exit(7);
}

int main(void)
{
    char *p = reserve_region();
    commit_region(p);
    name_region(p);
    trim_region(p);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0)
        return 1;
    pthread_join(t, NULL);
    pid_t c = fork();
    if (c == 0)
        child_main(p);
    int status;
    waitpid(c, &status, 0);
    printf("DONE %lx\n", (unsigned long)p);
    return 0;
}

/*
 * A program that uses bdwgc (the Boehm-Demers-Weiser collector, libgc) for its heap:
 * allocates and drops a few hundred MiB in small objects so that it collects and grows
 * its heap, then prints READY and sleeps until killed (at most 10 min).
 * Built against the shared library directly (no headers needed).
 */
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

void GC_init(void);
void *GC_malloc(size_t);
void GC_gcollect(void);

int main(void) {
    alarm(600);
    GC_init();
    void **keep = GC_malloc(1000 * sizeof(void *));
    for (long i = 0; i < 400000; i++) {
        void **p = GC_malloc(512);
        p[0] = keep[i % 1000];
        keep[i % 1000] = p;
        if (i % 100000 == 0)
            keep[(i / 7) % 1000] = NULL;
    }
    GC_gcollect();
    printf("READY\n");
    fflush(stdout);
    for (;;)
        pause();
}

/* Three known functions that each call mmap, for the symbolizer's tests
 * (tests/test_trace_symbols.py). Prints their addresses, the address of mmap itself
 * (dlsym) and of two anonymous executable mappings (rwx and r-x, as a JIT makes), then
 * waits to be read and killed (at most 10 min).
 *
 * Built -O0 -fno-inline so that each function stays a function of its own; reserve_space
 * is static, so that even with -rdynamic it is in .symtab only (a stripped copy loses it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

void *grow_arena(size_t n)
{
    return mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

void *map_table(size_t n)
{
    return mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void *reserve_space(size_t n)
{
    return mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

int main(void)
{
    void *a = grow_arena(3 * 4096), *b = map_table(2 * 4096), *c = reserve_space(5 * 4096);
    void *rwx = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *rx = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *mm = dlsym(RTLD_DEFAULT, "mmap");
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED || rwx == MAP_FAILED ||
        rx == MAP_FAILED || mm == NULL) {
        perror("callsites");
        return 1;
    }
    printf("ADDRS grow_arena=%p map_table=%p reserve_space=%p mmap=%p rwx=%p rx=%p\n",
           (void *)grow_arena, (void *)map_table, (void *)reserve_space, mm, rwx, rx);
    fflush(stdout);
    alarm(600); /* never outlive a test run by much */
    for (;;)
        pause();
}

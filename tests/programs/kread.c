/* kread: pieces of a PROT_NONE reservation made read-write out of address order (odd
 * pieces first), each first written by the kernel: read(2) from /dev/zero into it. The
 * anon_vma of each odd piece comes from a fault the kernel takes on the program's
 * behalf (copy_to_user), which a recorder must see for the replay to split where the
 * kernel did (about 200 VMAs of distinct anon_vmas).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    unsigned long piece = 4 * 4096; long n = 400;
    int fd = open("/dev/zero", O_RDONLY);
    char *r = mmap(NULL, n * piece, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (int pass = 1; pass >= 0; pass--)
        for (long i = pass; i < n; i += 2) {
            char *p = r + i * piece;
            mprotect(p, piece, PROT_READ | PROT_WRITE);
            if (read(fd, p, 1) != 1) return 2;   /* the first write is the kernel's */
        }
    printf("done\n");
    return 0;
}

/*
 * vmascope lab executor: runs op scripts against the real kernel.
 *
 * Built by vmascope with the system C compiler (static) on first use. Each script runs in
 * a fresh child process that reserves an arena at a fixed address, fenced on both sides by
 * a shared anonymous PROT_NONE page (each shared anonymous mapping has its own shmem file,
 * so nothing can ever merge with a fence). The child runs the ops, then reads its own
 * /proc/self/smaps and reports the VMAs inside the arena.
 *
 * Input (stdin on the host; /scripts.txt when running as /init in a microVM), one record a
 * line, numbers in decimal or 0x-hex, addresses relative to the arena:
 *   A BASE SIZE                 arena (optional; before the first script)
 *   Y N                         write N to /proc/sys/vm/max_map_count (microVM only)
 *   o N                         write N to /proc/sys/vm/overcommit_memory (microVM only)
 *   c N                         report the map count after every N ops of each script
 *   f N                         map N one-page VMAs outside the arena before each script
 *                               (a lower limit for the script without lowering the sysctl)
 *   k PATH                      after each script, read the script's process with
 *                               vmascope's kernel-view reader (PATH --serve --text,
 *                               started once) and report it
 *   x PATH ARG                  (microVM) probe a program: run PATH ARG, pass each line it
 *                               prints on as "x LINE"; for a line "PAIR NAME ADDR PID"
 *                               report process PID's smaps ("s PID LINE") and, with the
 *                               reader (k PATH first), its kernel view ("v PID LINE",
 *                               then "v PID ." or "v PID ! STATUS"), each process once,
 *                               when the program prints "READY"; then it is killed
 *   S ID TIMEOUT                start of a script
 *   M ADDR LEN PROT MAPFLAGS [FD OFF]   mmap (a hint of BASE+ADDR without MAP_FIXED);
 *                               FD: 0 anonymous, K the K-th memfd of the script (from 1)
 *   U ADDR LEN                  munmap
 *   P ADDR LEN PROT             mprotect
 *   D ADDR LEN ADVICE           madvise (the kernel's MADV_* number)
 *   R ADDR OLDLEN NEWLEN NEWADDR FLAGS HASNEW   mremap
 *   T ADDR WRITE                touch (1 write, 0 read)
 *   F N                         fork: N 0 the script's process forks, N K+1 its fork child K
 *                               does (told by SIGUSR1; it answers with the new pid); the
 *                               new child (numbered in fork order, grandchildren too)
 *                               stays alive until the script ends or it is told to exit
 *   N ADDR LEN [NAME]           PR_SET_VMA_ANON_NAME (no NAME: clear)
 *   B ADDR LEN MODE NODEMASK    mbind
 *   H ADDR                      heap: start_brk = brk = BASE+ADDR (PR_SET_MM)
 *   K ADDR                      brk(BASE+ADDR)
 *   L ADDR LEN FLAGS            mlock (FLAGS 0) or mlock2(FLAGS, e.g. MLOCK_ONFAULT = 1)
 *   W ADDR LEN                  munlock
 *   J FLAGS                     mlockall (MCL_CURRENT 1, MCL_FUTURE 2, MCL_ONFAULT 4)
 *   Q                           munlockall
 *   O LEN NAME                  memfd_create(NAME, 0) and ftruncate(LEN): the next memfd
 *   I ADDR LEN                  mseal (syscall 462; ENOSYS before 6.10)
 *   e CHILD                     the fork child CHILD (0-based, in fork order) exits now
 *                               (SIGKILL; waited for through a pidfd, so also for a
 *                               grandchild)
 *   a                           pkey_alloc(0, 0)
 *   p ADDR LEN PROT PKEY        pkey_mprotect (PKEY -1: no key)
 *   u ADDR LEN MODE             UFFDIO_REGISTER with MODE (MISSING 1, WP 2) on the script's
 *                               userfaultfd (made at its first u record, with
 *                               UFFD_FEATURE_SIGBUS: a userfault is SIGBUS, no handler
 *                               is needed); MODE 0: UFFDIO_UNREGISTER
 *
 * A touch that faults is caught by a signal handler and left with siglongjmp. Signal
 * delivery resets the thread's PKRU to the kernel's default (no access to keys other
 * than 0), and no sigreturn restores it; so once a pkey_alloc has succeeded, the PKRU
 * of before the touch is written back, and a fault leaves the script's keys as they were.
 *   E                           end of the script
 *
 * Output per script (stdout on the host, /dev/ttyS1 in a microVM), in this order:
 *   I MODE RATIO MEMTOTAL SWAPTOTAL COMMITLIMIT COMMITTED USERRES ADMINRES VMSIZE
 *                               (before the ops: overcommit settings and memory, in kB)
 *   O OPINDEX MAP_COUNT         (after op OPINDEX, every N ops when asked with c N)
 *   V START END PERMS PGOFF ANON_KB FLAG... <TAB> NAME      (START/END/PGOFF hex, relative)
 *   k START END REST            (with k PATH: the reader's line of an arena VMA, START and
 *                               END made relative; then "k ." or, if the reader failed,
 *                               "k ! STATUS")
 *   R ID MAP_COUNT              (the whole process, as vm.max_map_count counts it)
 *   X OPINDEX ERRNO
 *   G OPINDEX ADDR SIGNO
 *   C ID STATUS                 (the script's process died: wait status)
 *   Z ID                        end of this script's record
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <spawn.h>
#include <unistd.h>

extern char **environ;

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

#ifndef SYS_mseal
#define SYS_mseal 462
#endif

#define PAGE 4096UL
#define MAX_MEMFDS 64

struct op {
    char kind;
    uint64_t a, b, c, d, e, f;
    long name; /* offset into the name pool, -1 for none */
};

static uint64_t arena_base = 0x200000000000ULL;
static uint64_t arena_size = 0x1000000000ULL;

static struct op *ops;
static size_t nops, cap_ops;
static char *names;
static size_t names_len, names_cap;

/* Results, written by the script's process only. Allocated by the parent before fork. */
static int *err_op, *err_no;
static uint64_t *flt_addr;
static int *flt_op, *flt_sig;
static size_t nerr, nflt;
static pid_t kids[64];
static int nkids;
/* Fork children: a lifeline pipe (only the script's process holds its write end, so the
 * children see its end) and a reply pipe (a child that forked writes the new pid). */
static int lifeline[2] = {-1, -1}, reply[2] = {-1, -1};
static int memfds[MAX_MEMFDS];
static int nmemfds;

static int pkeys_used; /* a pkey_alloc succeeded: PKRU is saved around touches */
static int uffd = -1;  /* the script's userfaultfd (u records) */

static unsigned rdpkru(void)
{
    unsigned eax, edx;
    __asm__ volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
    return eax;
}

static void wrpkru(unsigned v)
{
    __asm__ volatile(".byte 0x0f,0x01,0xef" : : "a"(v), "c"(0), "d"(0));
}

static sigjmp_buf touch_jmp;
static volatile sig_atomic_t touching;

static long sample_every; /* c N */
static long fillers;      /* f N */

static int out_fd = 1;
static char obuf[1 << 16];
static size_t olen;

static void die(const char *msg)
{
    dprintf(2, "executor: %s\n", msg);
    _exit(2);
}

static void flush_out(void)
{
    size_t off = 0;
    while (off < olen) {
        ssize_t n = write(out_fd, obuf + off, olen - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _exit(3);
        }
        off += (size_t)n;
    }
    olen = 0;
}

static void out_str(const char *s, size_t n)
{
    while (n) {
        size_t room = sizeof obuf - olen;
        size_t k = n < room ? n : room;
        memcpy(obuf + olen, s, k);
        olen += k;
        s += k;
        n -= k;
        if (olen == sizeof obuf)
            flush_out();
    }
}

static void out_s(const char *s) { out_str(s, strlen(s)); }

static void out_u(uint64_t v, int base)
{
    char tmp[24];
    int i = sizeof tmp;
    const char *dig = "0123456789abcdef";
    do {
        tmp[--i] = dig[v % (unsigned)base];
        v /= (unsigned)base;
    } while (v);
    out_str(tmp + i, sizeof tmp - (size_t)i);
}

static void out_i(long v)
{
    if (v < 0) {
        out_s("-");
        out_u((uint64_t)(-v), 10);
    } else {
        out_u((uint64_t)v, 10);
    }
}

static void on_fault(int sig)
{
    if (touching)
        siglongjmp(touch_jmp, sig);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void record_err(size_t i, int e)
{
    err_op[nerr] = (int)i;
    err_no[nerr] = e;
    nerr++;
}

/* -- fork children ------------------------------------------------------------------ */

static void on_fork_request(int sig);

/* The pipes, SIGUSR1 blocked (a child takes it only while it waits), once per script. */
static int fork_setup(void)
{
    if (lifeline[0] >= 0)
        return 1;
    if (pipe2(lifeline, O_CLOEXEC) || pipe2(reply, O_CLOEXEC))
        return 0;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    return 1;
}

/* A child's life: wait for the script's process to end (the lifeline's end) and fork
 * when asked (SIGUSR1, taken only inside ppoll). */
static void child_wait(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fork_request;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGCHLD, SIG_IGN); /* its own children are reaped by the kernel */
    sigset_t wait_mask;
    sigprocmask(SIG_SETMASK, NULL, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    struct pollfd pfd = {.fd = lifeline[0], .events = POLLIN};
    for (;;)
        if (ppoll(&pfd, 1, NULL, &wait_mask) > 0)
            _exit(0);
}

/* fork here: the new child waits; returns its pid (or -errno) in this process. */
static pid_t fork_child(int direct)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        if (direct)
            prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (lifeline[1] >= 0) {
            close(lifeline[1]);
            lifeline[1] = -1;
        }
        child_wait();
    }
    return pid;
}

/* In a child, on SIGUSR1: fork a grandchild and tell the script's process its pid. */
static void on_fork_request(int sig)
{
    (void)sig;
    int saved = errno;
    pid_t pid = fork_child(0);
    if (pid != 0) {
        int32_t v = (int32_t)pid;
        if (write(reply[1], &v, sizeof v) != sizeof v)
            _exit(1);
    }
    errno = saved;
}

/* Ask child pid to fork; the new pid, or -errno. */
static pid_t ask_fork(pid_t pid)
{
    int32_t v;
    if (kill(pid, SIGUSR1))
        return -errno;
    while (read(reply[0], &v, sizeof v) != sizeof v)
        if (errno != EINTR)
            return -EIO;
    return (pid_t)v;
}

/* SIGKILL a child (or grandchild) and wait until it is gone: its mm is torn down once
 * its pidfd is readable (exit_mm comes before the exit notification). */
static void end_child(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    kill(pid, SIGKILL);
    if (fd >= 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        while (poll(&pfd, 1, 10000) < 0 && errno == EINTR)
            ;
        close(fd);
    }
    waitpid(pid, NULL, WNOHANG); /* a direct child: reap it */
    if (fd < 0)
        waitpid(pid, NULL, 0);
}

static void run_op(size_t i)
{
    struct op *o = &ops[i];
    uint64_t B = arena_base;
    long r;
    switch (o->kind) {
    case 'M': {
        int fd = o->e == 0 ? -1 : o->e <= (uint64_t)nmemfds ? memfds[o->e - 1] : -1;
        void *p = mmap((void *)(B + o->a), o->b, (int)o->c, (int)o->d, fd, (off_t)o->f);
        if (p == MAP_FAILED)
            record_err(i, errno);
        break;
    }
    case 'O': {
        int fd = (int)syscall(SYS_memfd_create, o->name >= 0 ? names + o->name : "", 0U);
        if (fd < 0 || nmemfds == MAX_MEMFDS) {
            record_err(i, fd < 0 ? errno : EMFILE);
            fd = -1;
        } else if (ftruncate(fd, (off_t)o->a)) {
            record_err(i, errno);
        }
        if (nmemfds < MAX_MEMFDS)
            memfds[nmemfds++] = fd; /* a failed memfd still takes its number */
        break;
    }
    case 'I':
        if (syscall(SYS_mseal, B + o->a, o->b, 0UL) == -1)
            record_err(i, errno);
        break;
    case 'e':
        if (o->a < (uint64_t)nkids && kids[o->a] > 0) {
            end_child(kids[o->a]);
            kids[o->a] = 0;
        } else {
            record_err(i, ESRCH);
        }
        break;
    case 'u': {
        if (uffd < 0) {
            struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS};
            int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
            if (fd < 0 || ioctl(fd, UFFDIO_API, &api)) {
                record_err(i, errno);
                if (fd >= 0)
                    close(fd);
                break;
            }
            uffd = fd;
        }
        if (o->c) {
            struct uffdio_register reg = {
                .range = {.start = B + o->a, .len = o->b}, .mode = o->c};
            if (ioctl(uffd, UFFDIO_REGISTER, &reg))
                record_err(i, errno);
        } else {
            struct uffdio_range range = {.start = B + o->a, .len = o->b};
            if (ioctl(uffd, UFFDIO_UNREGISTER, &range))
                record_err(i, errno);
        }
        break;
    }
    case 'a':
        if (syscall(SYS_pkey_alloc, 0UL, 0UL) == -1)
            record_err(i, errno);
        else
            pkeys_used = 1;
        break;
    case 'p':
        if (syscall(SYS_pkey_mprotect, B + o->a, o->b, (int)o->c, (int)o->d) == -1)
            record_err(i, errno);
        break;
    case 'U':
        if (munmap((void *)(B + o->a), o->b))
            record_err(i, errno);
        break;
    case 'P':
        if (mprotect((void *)(B + o->a), o->b, (int)o->c))
            record_err(i, errno);
        break;
    case 'D':
        if (madvise((void *)(B + o->a), o->b, (int)o->c))
            record_err(i, errno);
        break;
    case 'R': {
        uint64_t na = o->f ? B + o->d : 0;
        r = syscall(SYS_mremap, B + o->a, o->b, o->c, (int)o->e, na);
        if (r == -1)
            record_err(i, errno);
        break;
    }
    case 'T': {
        volatile char *p = (volatile char *)(B + o->a);
        volatile unsigned pkru = pkeys_used ? rdpkru() : 0;
        int sig = sigsetjmp(touch_jmp, 1);
        if (sig == 0) {
            touching = 1;
            if (o->b)
                *p = 'a';
            else
                (void)*p;
            touching = 0;
        } else {
            touching = 0;
            if (pkeys_used)
                wrpkru(pkru);
            flt_op[nflt] = (int)i;
            flt_addr[nflt] = o->a;
            flt_sig[nflt] = sig;
            nflt++;
        }
        break;
    }
    case 'F': {
        pid_t pid = -1;
        int err = 0;
        if (!fork_setup())
            err = errno;
        else if (o->a == 0)
            pid = fork_child(1);
        else if (o->a - 1 < (uint64_t)nkids && kids[o->a - 1] > 0)
            pid = ask_fork(kids[o->a - 1]);
        else
            err = ESRCH;
        if (!err && pid < 0)
            err = (int)-pid;
        if (err) {
            record_err(i, err);
        } else if (nkids < (int)(sizeof kids / sizeof kids[0])) {
            kids[nkids++] = pid;
        } else {
            end_child(pid);
            record_err(i, EAGAIN);
        }
        break;
    }
    case 'N': {
        const char *nm = o->name >= 0 ? names + o->name : NULL;
        if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, B + o->a, o->b, nm))
            record_err(i, errno);
        break;
    }
    case 'B': {
        unsigned long mask = (unsigned long)o->d;
        r = syscall(SYS_mbind, B + o->a, o->b, (int)o->c, o->c ? &mask : NULL,
                    o->c ? 64UL : 0UL, 0U);
        if (r == -1)
            record_err(i, errno);
        break;
    }
    case 'H':
        /* brk first: the kernel keeps start_brk <= brk at every step (EINVAL otherwise). */
        if (prctl(PR_SET_MM, PR_SET_MM_BRK, B + o->a, 0, 0) ||
            prctl(PR_SET_MM, PR_SET_MM_START_BRK, B + o->a, 0, 0))
            record_err(i, errno);
        break;
    case 'K':
        r = syscall(SYS_brk, B + o->a);
        if ((uint64_t)r != B + o->a)
            record_err(i, ENOMEM);
        break;
    case 'L':
        r = o->c ? syscall(SYS_mlock2, B + o->a, o->b, (unsigned)o->c)
                 : syscall(SYS_mlock, B + o->a, o->b);
        if (r == -1)
            record_err(i, errno);
        break;
    case 'W':
        if (syscall(SYS_munlock, B + o->a, o->b) == -1)
            record_err(i, errno);
        break;
    case 'J':
        if (syscall(SYS_mlockall, (int)o->a) == -1)
            record_err(i, errno);
        break;
    case 'Q':
        if (syscall(SYS_munlockall) == -1)
            record_err(i, errno);
        break;
    default:
        record_err(i, EINVAL);
    }
}

/* Stream /proc/self/smaps and report the arena's VMAs. */
static char sbuf[1 << 20];

struct cur {
    int in_arena;
    uint64_t start, end, pgoff;
    char perms[5];
    char name[512];
    long anon_kb;
    char flags[256];
};

static void emit_vma(struct cur *c)
{
    out_s("V ");
    out_u(c->start - arena_base, 16);
    out_s(" ");
    out_u(c->end - arena_base, 16);
    out_s(" ");
    out_s(c->perms);
    out_s(" ");
    out_u(c->pgoff, 16);
    out_s(" ");
    out_i(c->anon_kb);
    if (c->flags[0]) {
        out_s(" ");
        out_s(c->flags);
    }
    out_s("\t");
    out_s(c->name);
    out_s("\n");
}

static void smaps_line(char *line, struct cur *c, long *total)
{
    /* A header line starts with a hex address and a '-'; field lines with a Name: */
    char *p = line;
    while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
        p++;
    if (p != line && *p == '-') {
        if (c->in_arena)
            emit_vma(c);
        /* [vsyscall] is the gate area, shown by /proc but not a VMA of the mm: it does
         * not count against vm.max_map_count. */
        if (!strstr(line, "[vsyscall]"))
            (*total)++;
        char *q;
        uint64_t s = strtoull(line, &q, 16);
        uint64_t e = strtoull(q + 1, &q, 16);
        c->in_arena = s >= arena_base && e <= arena_base + arena_size;
        if (!c->in_arena)
            return;
        c->start = s;
        c->end = e;
        q++;
        memcpy(c->perms, q, 4);
        c->perms[4] = 0;
        q += 5;
        c->pgoff = strtoull(q, &q, 16);
        /* skip dev and inode */
        while (*q == ' ')
            q++;
        while (*q && *q != ' ')
            q++;
        while (*q == ' ')
            q++;
        while (*q && *q != ' ')
            q++;
        while (*q == ' ')
            q++;
        snprintf(c->name, sizeof c->name, "%s", q);
        c->anon_kb = -1;
        c->flags[0] = 0;
        return;
    }
    if (!c->in_arena)
        return;
    if (!strncmp(line, "Anonymous:", 10)) {
        c->anon_kb = strtol(line + 10, NULL, 10);
    } else if (!strncmp(line, "VmFlags:", 8)) {
        char *q = line + 8;
        while (*q == ' ')
            q++;
        size_t n = strlen(q);
        while (n && q[n - 1] == ' ')
            q[--n] = 0;
        snprintf(c->flags, sizeof c->flags, "%s", q);
    }
}

static long report_smaps(void)
{
    struct cur c;
    long total = 0;
    memset(&c, 0, sizeof c);
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, sbuf + have, sizeof sbuf - have - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t start = 0;
        for (size_t k = 0; k < have; k++) {
            if (sbuf[k] == '\n') {
                sbuf[k] = 0;
                smaps_line(sbuf + start, &c, &total);
                start = k + 1;
            }
        }
        memmove(sbuf, sbuf + start, have - start);
        have -= start;
        if (have == sizeof sbuf - 1)
            have = 0; /* a line longer than the buffer: drop it */
    }
    close(fd);
    if (c.in_arena)
        emit_vma(&c);
    return total;
}

/* The process's map count: the lines of /proc/self/maps, less the [vsyscall] gate. */
static long count_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long lines = 0;
    char tail[32] = {0};
    size_t tl = 0;
    for (;;) {
        ssize_t n = read(fd, sbuf, sizeof sbuf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t k = 0; k < n; k++)
            if (sbuf[k] == '\n')
                lines++;
        size_t keep = (size_t)n < sizeof tail - 1 ? (size_t)n : sizeof tail - 1;
        if (tl + keep > sizeof tail - 1) {
            size_t drop = tl + keep - (sizeof tail - 1);
            memmove(tail, tail + drop, tl - drop);
            tl -= drop;
        }
        memcpy(tail + tl, sbuf + n - keep, keep);
        tl += keep;
        tail[tl] = 0;
    }
    close(fd);
    if (strstr(tail, "[vsyscall]"))
        lines--;
    return lines;
}

/* The value of "KEY: N" in a /proc file, or of its only number (sysctls); -1 if absent. */
static long proc_value(const char *path, const char *key)
{
    char buf[8192];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = buf;
    if (key) {
        p = strstr(buf, key);
        if (!p)
            return -1;
        p += strlen(key);
    }
    return strtol(p, NULL, 10);
}

static void report_memory(void)
{
    long v[9] = {
        proc_value("/proc/sys/vm/overcommit_memory", NULL),
        proc_value("/proc/sys/vm/overcommit_ratio", NULL),
        proc_value("/proc/meminfo", "MemTotal:"),
        proc_value("/proc/meminfo", "SwapTotal:"),
        proc_value("/proc/meminfo", "CommitLimit:"),
        proc_value("/proc/meminfo", "Committed_AS:"),
        proc_value("/proc/sys/vm/user_reserve_kbytes", NULL),
        proc_value("/proc/sys/vm/admin_reserve_kbytes", NULL),
        proc_value("/proc/self/status", "VmSize:"),
    };
    out_s("I");
    for (int k = 0; k < 9; k++) {
        out_s(" ");
        out_i(v[k]);
    }
    out_s("\n");
}

/* n one-page VMAs that cannot merge (alternating PROT_NONE and PROT_READ). */
static void map_fillers(long n)
{
    if (n <= 0)
        return;
    char *f = mmap(NULL, (size_t)n * PAGE, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f == MAP_FAILED)
        die("cannot map the fillers");
    for (long k = 1; k < n; k += 2)
        if (mprotect(f + k * PAGE, PAGE, PROT_READ))
            die("cannot split the fillers");
}

/* The kernel view of the arena (record k PATH): the reader runs as a server (kview
 * --serve --text), started once by the executor before any script, so that its BPF
 * program is loaded and verified once. The script's process sends its own pid and
 * passes the reader's lines of arena VMAs on with relative addresses. */
static char kview_path[512];
static int kview_sock = -1;   /* the executor's end of the socket pair */
static int kview_status;      /* a wait-status-like code when the reader cannot run */
static pid_t kview_pid;

/* One line from fd, byte by byte (no buffer that a forked child could inherit). */
static int read_line(int fd, char *line, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (line[n++] == '\n')
            break;
    }
    line[n] = 0;
    return (int)n;
}

static void start_kview(void)
{
    int sv[2];
    char line[64];
    posix_spawn_file_actions_t fa;
    char *argv[] = {kview_path, "--serve", "--text", NULL};

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        die("socketpair failed");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    if (posix_spawn(&kview_pid, kview_path, &fa, NULL, argv, environ) != 0)
        kview_pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    kview_sock = sv[0];
    if (kview_pid <= 0) {
        kview_status = -1;
    } else if (read_line(kview_sock, line, sizeof line) < 0) {
        kview_status = -1;
    } else if (line[0] == '!') {
        kview_status = atoi(line + 2) << 8; /* as a wait status: exited with STATUS */
    }
}

/* Ask the reader for process pid: 0 when asked (its lines follow, up to "." or
 * "! STATUS"), -1 when there is no reader or it cannot take the request. */
static int kview_ask(pid_t pid)
{
    char line[32];
    int n;

    if (kview_sock < 0 || kview_status)
        return -1;
    n = snprintf(line, sizeof line, "%d\n", (int)pid);
    return send(kview_sock, line, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

static void report_kview(void)
{
    char line[512];
    int n = kview_ask(getpid());

    while (n >= 0 && (n = read_line(kview_sock, line, sizeof line)) >= 0) {
        char *rest;
        if (!strcmp(line, ".\n")) {
            out_s("k .\n");
            return;
        }
        if (line[0] == '!') {
            kview_status = atoi(line + 2) << 8;
            break;
        }
        uint64_t s = strtoull(line, &rest, 16), e = strtoull(rest, &rest, 16);
        if (s < arena_base || e > arena_base + arena_size)
            continue;
        out_s("k ");
        out_u(s - arena_base, 16);
        out_s(" ");
        out_u(e - arena_base, 16);
        out_s(rest); /* " FLAGS ... BITS\n" */
    }
    snprintf(line, sizeof line, "k ! %d\n", kview_status ? kview_status : -1);
    out_s(line);
}

/* The reader's answer for process pid as "v PID LINE" lines (absolute addresses). */
static void probe_kview(pid_t pid)
{
    char line[512], tag[32];
    int n = kview_ask(pid);

    snprintf(tag, sizeof tag, "v %d ", (int)pid);
    while (n >= 0 && (n = read_line(kview_sock, line, sizeof line)) >= 0) {
        out_s(tag);
        out_s(line);
        if (!strcmp(line, ".\n") || line[0] == '!')
            return;
    }
    snprintf(line, sizeof line, "%s! %d\n", tag, kview_status ? kview_status : -1);
    out_s(line);
}

static void probe_smaps(pid_t pid)
{
    char path[64], line[1024], tag[32];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    snprintf(tag, sizeof tag, "s %d ", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        out_s(tag);
        out_s(line);
    }
    if (f)
        fclose(f);
}

static void probe_program(char *spec)
{
    char *arg = strchr(spec, ' ');
    int fds[2];
    pid_t pid;
    char line[512];

    if (arg)
        *arg++ = 0;
    char *argv[] = {spec, arg, NULL};
    if (pipe(fds))
        die("pipe failed");
    pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(spec, argv);
        _exit(127);
    }
    close(fds[1]);
    pid_t seen[16];
    int nseen = 0;
    while (read_line(fds[0], line, sizeof line) > 0) {
        out_s("x ");
        out_s(line);
        if (!strncmp(line, "READY", 5)) {
            /* every pair is made: read each process once, then the program goes */
            for (int k = 0; k < nseen; k++) {
                probe_smaps(seen[k]);
                probe_kview(seen[k]);
            }
            break;
        }
        int who;
        if (sscanf(line, "PAIR %*s %*s %d", &who) == 1) {
            int k = 0;
            while (k < nseen && seen[k] != (pid_t)who)
                k++;
            if (k == nseen && nseen < (int)(sizeof seen / sizeof seen[0]))
                seen[nseen++] = (pid_t)who;
        }
    }
    close(fds[0]);
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    flush_out();
}

static void run_script(long id)
{
    /* Fences: one shared anonymous PROT_NONE page on each side of the arena. */
    void *lo = mmap((void *)(arena_base - PAGE), PAGE, PROT_NONE,
                    MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    void *hi = mmap((void *)(arena_base + arena_size), PAGE, PROT_NONE,
                    MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (lo != (void *)(arena_base - PAGE) || hi != (void *)(arena_base + arena_size))
        die("cannot place the arena fences (address range in use)");
    /* Check that the arena itself is empty. */
    void *a = mmap((void *)arena_base, arena_size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (a != (void *)arena_base)
        die("the arena is not empty");
    munmap(a, arena_size);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    map_fillers(fillers);
    report_memory();
    for (size_t i = 0; i < nops; i++) {
        run_op(i);
        if (sample_every > 0 && (i + 1) % (size_t)sample_every == 0) {
            out_s("O ");
            out_u((uint64_t)i, 10);
            out_s(" ");
            out_i(count_maps());
            out_s("\n");
        }
    }

    /* The V lines come first, then R (its count is known only after the walk). */
    long total = report_smaps();
    if (kview_path[0])
        report_kview();
    char hdr[64];
    int hn = snprintf(hdr, sizeof hdr, "R %ld %ld\n", id, total);
    out_str(hdr, (size_t)hn);
    for (size_t k = 0; k < nerr; k++) {
        out_s("X ");
        out_u((uint64_t)err_op[k], 10);
        out_s(" ");
        out_u((uint64_t)err_no[k], 10);
        out_s("\n");
    }
    for (size_t k = 0; k < nflt; k++) {
        out_s("G ");
        out_u((uint64_t)flt_op[k], 10);
        out_s(" ");
        out_u(flt_addr[k], 16);
        out_s(" ");
        out_u((uint64_t)flt_sig[k], 10);
        out_s("\n");
    }
    for (int k = 0; k < nkids; k++) {
        if (kids[k] <= 0)
            continue;
        end_child(kids[k]);
    }
    flush_out();
}

/* Fork grandchildren whose parent had gone, and a probed program's children, were
 * re-parented here (the executor is a subreaper): reap the ones that have ended. */
static void reap_orphans(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static void start_script(long id, long timeout)
{
    free(err_op);
    free(err_no);
    free(flt_addr);
    free(flt_op);
    free(flt_sig);
    size_t n = nops ? nops : 1;
    err_op = calloc(n, sizeof *err_op);
    err_no = calloc(n, sizeof *err_no);
    flt_addr = calloc(n, sizeof *flt_addr);
    flt_op = calloc(n, sizeof *flt_op);
    flt_sig = calloc(n, sizeof *flt_sig);
    if (!err_op || !err_no || !flt_addr || !flt_op || !flt_sig)
        die("out of memory");
    nerr = nflt = 0;
    nkids = 0;
    nmemfds = 0;
    pkeys_used = 0;
    flush_out();
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm((unsigned)(timeout > 0 ? timeout : 30));
        run_script(id);
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    reap_orphans();
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char line[64];
        int k = snprintf(line, sizeof line, "C %ld %d\n", id, st);
        out_str(line, (size_t)k);
    }
    char line[32];
    int k = snprintf(line, sizeof line, "Z %ld\n", id);
    out_str(line, (size_t)k);
    flush_out();
}

static void add_op(struct op *o)
{
    if (nops == cap_ops) {
        cap_ops = cap_ops ? cap_ops * 2 : 256;
        ops = realloc(ops, cap_ops * sizeof *ops);
        if (!ops)
            die("out of memory");
    }
    ops[nops++] = *o;
}

static long add_name(const char *s)
{
    size_t n = strlen(s) + 1;
    if (names_len + n > names_cap) {
        names_cap = (names_len + n) * 2 + 1024;
        names = realloc(names, names_cap);
        if (!names)
            die("out of memory");
    }
    memcpy(names + names_len, s, n);
    names_len += n;
    return (long)(names_len - n);
}

static void set_max_map_count(const char *value)
{
    int fd = open("/proc/sys/vm/max_map_count", O_WRONLY);
    if (fd < 0 || write(fd, value, strlen(value)) < 0)
        die("cannot set vm.max_map_count");
    close(fd);
}

static int run_input(FILE *in)
{
    char *line = NULL;
    size_t cap = 0;
    long id = -1, timeout = 30;
    long lineno = 0;
    /* A fork grandchild whose parent exits comes here, is ended by its script and
     * reaped after it, not left to the machine's init. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n)
            continue;
        struct op o;
        memset(&o, 0, sizeof o);
        o.kind = line[0];
        o.name = -1;
        char *p = line + 1;
        if (o.kind == 'k') { /* k PATH: the kernel-view reader (needs sysfs for BTF) */
            snprintf(kview_path, sizeof kview_path, "%s", line + 2);
            if (getpid() == 1) {
                mkdir("/sys", 0555);
                mount("sysfs", "/sys", "sysfs", 0, NULL);
            }
            start_kview();
            continue;
        }
        if (o.kind == 'x') { /* x PATH ARG: probe a program (now) */
            probe_program(line + 2);
            continue;
        }
        if (o.kind == 'N' || o.kind == 'O') {
            o.a = strtoull(p, &p, 0);
            if (o.kind == 'N')
                o.b = strtoull(p, &p, 0);
            if (*p == ' ' && p[1])
                o.name = add_name(p + 1);
            add_op(&o);
            continue;
        }
        uint64_t v[6] = {0};
        for (int k = 0; k < 6; k++) {
            while (*p == ' ')
                p++;
            if (!*p)
                break;
            v[k] = strtoull(p, &p, 0);
        }
        switch (o.kind) {
        case 'A':
            arena_base = v[0];
            arena_size = v[1];
            break;
        case 'Y': {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%llu\n", (unsigned long long)v[0]);
            set_max_map_count(tmp);
            break;
        }
        case 'o': {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%llu\n", (unsigned long long)v[0]);
            int fd = open("/proc/sys/vm/overcommit_memory", O_WRONLY);
            if (fd < 0 || write(fd, tmp, strlen(tmp)) < 0)
                die("cannot set vm.overcommit_memory");
            close(fd);
            break;
        }
        case 'c':
            sample_every = (long)v[0];
            break;
        case 'f':
            fillers = (long)v[0];
            break;
        case 'S':
            id = (long)v[0];
            timeout = (long)v[1];
            nops = 0;
            names_len = 0;
            break;
        case 'E':
            start_script(id, timeout);
            nops = 0;
            break;
        case 'M': case 'U': case 'P': case 'D': case 'R': case 'T': case 'F': case 'B':
        case 'H': case 'K': case 'L': case 'W': case 'J': case 'Q': case 'I': case 'e':
        case 'a': case 'p': case 'u':
            o.a = v[0]; o.b = v[1]; o.c = v[2]; o.d = v[3]; o.e = v[4]; o.f = v[5];
            add_op(&o);
            break;
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "input line %ld: unknown record '%c'", lineno, o.kind);
            die(msg);
        }
        }
    }
    free(line);
    reap_orphans();
    if (kview_sock >= 0) { /* end of input for the reader too */
        close(kview_sock);
        if (kview_pid > 0)
            while (waitpid(kview_pid, NULL, 0) < 0 && errno == EINTR)
                ;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (getpid() == 1) {
        /* /init of a microVM: results go to the second serial port, then power off. */
        mkdir("/proc", 0555);
        mount("proc", "/proc", "proc", 0, NULL);
        int fd = open("/dev/ttyS1", O_WRONLY | O_NOCTTY);
        if (fd >= 0)
            out_fd = fd;
        FILE *in = fopen("/scripts.txt", "r");
        out_s("@@VMASCOPE-BEGIN\n");
        if (in) {
            char rel[128];
            int rfd = open("/proc/sys/kernel/osrelease", O_RDONLY);
            ssize_t k = rfd >= 0 ? read(rfd, rel, sizeof rel - 1) : -1;
            if (k > 0) {
                rel[k] = 0;
                out_s("K ");
                out_s(rel); /* ends with a newline */
            }
            run_input(in);
        }
        out_s(in ? "@@VMASCOPE-END\n" : "@@VMASCOPE-END noinput\n");
        flush_out();
        sync();
        reboot(RB_POWER_OFF);
        for (;;)
            pause();
    }
    FILE *in = stdin;
    if (argc > 1 && !(in = fopen(argv[1], "r")))
        die("cannot open the input file");
    setvbuf(stdout, NULL, _IONBF, 0);
    return run_input(in);
}

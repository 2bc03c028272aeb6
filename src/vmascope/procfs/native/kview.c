/* kview: print the kernel's view of one process's VMAs (vmascope's BPF reader).
 *
 *   kview PID [--text]
 *   kview --serve [--text]
 *
 * Loads the task_vma iterator of kview.bpf.c (embedded as kview_obj.h by the build),
 * restricted to process PID, and prints one record per VMA. With --serve the program is
 * loaded once (the verifier's work is most of a capture's time): it writes "+" (or
 * "! STATUS" and ends) once loaded, then reads process ids from stdin, one a line;
 * after each capture's records it writes a line "." (or "! STATUS" with one of the
 * exit statuses below) and flushes; it ends at end of input. Kernel pointers never leave
 * this program: the anon_vma (and its root), the struct file, the mempolicy, the
 * userfaultfd context and the anon_vma_name are renumbered per capture, 1, 2, ... in the
 * order first seen (0 = none); an anon_vma and a root share one numbering.
 *
 * Output: by default a binary stream of records of 16 little-endian u64 (the fields of
 * struct kv_rec, identities renumbered); with --text one line per VMA:
 *   start end flags pgoff dev ino file anon_vma root chain children active policy uffd
 *   name bits
 * (start, end, flags, pgoff in hex; identities as f3, av7, p1, u1, n2 or -).
 *
 * Errors: one line on stderr, "kview: ...", and the exit status says which:
 *   2 usage, 3 not permitted, 4 no BTF, 5 no task_vma iterator, 6 no such process,
 *   1 anything else.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kview_obj.h" /* static const unsigned char kview_obj[]; (the BPF object) */

struct kv_rec {
	uint64_t start, end, flags, pgoff, dev, ino, file, anon_vma, root, chain,
		 children, active, policy, uffd, name, bits;
};

static char last_msg[512];
static int timing;

/* KVIEW_TIMING=1: the time of each stage on stderr (for the benchmark). */
static void stage(const char *what)
{
	static struct timespec last;
	struct timespec now;
	if (!timing)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (last.tv_sec)
		fprintf(stderr, "kview: %s %.1f ms\n", what,
			(now.tv_sec - last.tv_sec) * 1e3 + (now.tv_nsec - last.tv_nsec) / 1e6);
	last = now;
}

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
	if (getenv("KVIEW_DEBUG"))
		fputs(last_msg, stderr);
	return 0;
}

/* A failure: the message on stderr, the exit status returned (main returns it). */
static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	fputs("kview: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Renumbering: open addressing over (kind, pointer) -> number. */
enum { K_ANON, K_FILE, K_POLICY, K_UFFD, K_NAME, K_KINDS };
static uint64_t *keys;
static uint32_t *vals;
static size_t cap, used;
static uint32_t next_id[K_KINDS];

static size_t slot_of(uint64_t key)
{
	uint64_t h = key * 0x9E3779B97F4A7C15ULL;
	size_t i = (size_t)(h >> 17) & (cap - 1);
	while (keys[i] && keys[i] != key)
		i = (i + 1) & (cap - 1);
	return i;
}

static void grow(void)
{
	uint64_t *ok = keys;
	uint32_t *ov = vals;
	size_t oc = cap;
	cap = cap ? cap * 2 : 4096;
	keys = calloc(cap, sizeof(*keys));
	vals = calloc(cap, sizeof(*vals));
	if (!keys || !vals)
		exit(fail(1, "out of memory"));
	for (size_t i = 0; i < oc; i++)
		if (ok[i]) {
			size_t s = slot_of(ok[i]);
			keys[s] = ok[i];
			vals[s] = ov[i];
		}
	free(ok);
	free(ov);
}

/* A new capture: the numbering starts again at 1. */
static void renumber_reset(void)
{
	if (cap)
		memset(keys, 0, cap * sizeof(*keys));
	used = 0;
	memset(next_id, 0, sizeof(next_id));
}

static uint64_t renumber(int kind, uint64_t ptr)
{
	uint64_t key;
	size_t s;
	if (!ptr)
		return 0;
	/* Pointers are 8-byte aligned: the low bits carry the kind. */
	key = (ptr & ~7ULL) | (uint64_t)kind;
	if ((used + 1) * 2 > cap)
		grow();
	s = slot_of(key);
	if (!keys[s]) {
		keys[s] = key;
		vals[s] = ++next_id[kind];
		used++;
	}
	return vals[s];
}

static void put_id(FILE *out, const char *prefix, uint64_t id)
{
	if (id)
		fprintf(out, " %s%llu", prefix, (unsigned long long)id);
	else
		fputs(" -", out);
}

struct kv_ctl {
	int tgid;
	int emitting_tid;
};

static struct bpf_object *obj;
static struct bpf_program *prog;
static struct bpf_map *ctl_map;
static char *buf;
static size_t size = 1 << 20;

/* Open and load the BPF program (once). 0, or an exit status with the message said. */
static int load(void)
{
	struct bpf_map *map;
	int err;

	if (access("/sys/kernel/btf/vmlinux", R_OK))
		return fail(4, "the kernel has no BTF (/sys/kernel/btf/vmlinux: "
			    "CONFIG_DEBUG_INFO_BTF is off)");
	libbpf_set_print(quiet_print);
	obj = bpf_object__open_mem(kview_obj, sizeof(kview_obj), NULL);
	if (!obj)
		return fail(1, "cannot open the BPF object: %s", strerror(errno));
	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t nl = strlen(name);
		if (nl >= 4 && !strcmp(name + nl - 4, ".bss"))
			ctl_map = map;
	}
	if (!ctl_map || bpf_map__value_size(ctl_map) != sizeof(struct kv_ctl))
		return fail(1, "the BPF object has no control block (struct kv_ctl in .bss)");
	stage("open");
	err = bpf_object__load(obj);
	stage("load");
	if (err) {
		if (err == -EPERM || err == -EACCES)
			return fail(3, "not permitted to load BPF programs (needs root: CAP_BPF "
				    "and CAP_PERFMON, or CAP_SYS_ADMIN)");
		if (err == -ESRCH || err == -ENOENT || strstr(last_msg, "task_vma"))
			return fail(5, "this kernel has no task_vma BPF iterator (Linux 5.12 "
				    "or newer)");
		return fail(1, "loading the BPF program failed: %s", strerror(-err));
	}
	prog = bpf_object__find_program_by_name(obj, "kview");
	if (!prog)
		return fail(1, "the BPF object has no program 'kview'");
	buf = malloc(size);
	if (!buf)
		return fail(1, "out of memory");
	return 0;
}

/* One capture of process pid into buf (*len bytes, identities renumbered); the iterator
 * link is gone again when this returns. 0, or an exit status with the message said. */
static int capture(long pid, size_t *len)
{
	union bpf_iter_link_info linfo;
	LIBBPF_OPTS(bpf_iter_attach_opts, opts);
	struct kv_ctl ctl = {.tgid = (int)pid};
	struct bpf_link *link;
	int iter_fd, err, zero = 0;
	ssize_t n;

	*len = 0;
	if (kill((pid_t)pid, 0) && errno == ESRCH)
		return fail(6, "no process %ld", pid);
	if (bpf_map_update_elem(bpf_map__fd(ctl_map), &zero, &ctl, BPF_ANY))
		return fail(1, "setting the process to read failed: %s", strerror(errno));
	/* The per-process filter (6.1+); older kernels refuse the parameter (E2BIG) or
	 * ignore it, and the program's own tgid test does the filtering. Never the
	 * per-thread filter (tid): it loops on some kernels once the output needs a
	 * second read(). */
	memset(&linfo, 0, sizeof(linfo));
	linfo.task.pid = (uint32_t)pid;
	opts.link_info = &linfo;
	opts.link_info_len = sizeof(linfo);
	link = bpf_program__attach_iter(prog, &opts);
	if (!link && (errno == E2BIG || errno == EINVAL))
		link = bpf_program__attach_iter(prog, NULL);
	if (!link) {
		err = errno;
		if (err == ENOENT || err == ESRCH)
			return fail(6, "no process %ld", pid);
		if (err == EPERM || err == EACCES)
			return fail(3, "not permitted to attach BPF iterators (needs root)");
		return fail(1, "attaching the task_vma iterator failed: %s", strerror(err));
	}
	iter_fd = bpf_iter_create(bpf_link__fd(link));
	if (iter_fd < 0) {
		err = errno;
		bpf_link__destroy(link);
		return fail(1, "creating the iterator failed: %s", strerror(err));
	}
	stage("attach");
	for (;;) {
		if (size - *len < 65536) {
			char *more = realloc(buf, size * 2);
			if (!more) {
				close(iter_fd);
				bpf_link__destroy(link);
				return fail(1, "out of memory");
			}
			buf = more;
			size *= 2;
		}
		n = read(iter_fd, buf + *len, size - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			close(iter_fd);
			bpf_link__destroy(link);
			return fail(1, "reading the iterator failed: %s", strerror(err));
		}
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	stage("read");
	close(iter_fd);
	bpf_link__destroy(link);
	if (*len % sizeof(struct kv_rec))
		return fail(1, "the iterator's output is cut (%zu bytes)", *len);
	if (*len == 0 && kill((pid_t)pid, 0) && errno == ESRCH)
		return fail(6, "no process %ld", pid);
	renumber_reset();
	for (size_t off = 0; off < *len; off += sizeof(struct kv_rec)) {
		struct kv_rec *r = (struct kv_rec *)(buf + off);
		r->file = renumber(K_FILE, r->file);
		r->anon_vma = renumber(K_ANON, r->anon_vma);
		r->root = renumber(K_ANON, r->root);
		r->policy = renumber(K_POLICY, r->policy);
		r->uffd = renumber(K_UFFD, r->uffd);
		r->name = renumber(K_NAME, r->name);
	}
	return 0;
}

/* The records of one capture on stdout, as text lines or binary. 0 or an exit status. */
static int put_records(size_t len, int text)
{
	for (size_t off = 0; text && off < len; off += sizeof(struct kv_rec)) {
		struct kv_rec *r = (struct kv_rec *)(buf + off);
		printf("%llx %llx %llx %llx %llu %llu",
		       (unsigned long long)r->start, (unsigned long long)r->end,
		       (unsigned long long)r->flags, (unsigned long long)r->pgoff,
		       (unsigned long long)r->dev, (unsigned long long)r->ino);
		put_id(stdout, "f", r->file);
		put_id(stdout, "av", r->anon_vma);
		put_id(stdout, "av", r->root);
		printf(" %llu %llu %llu", (unsigned long long)r->chain,
		       (unsigned long long)r->children, (unsigned long long)r->active);
		put_id(stdout, "p", r->policy);
		put_id(stdout, "u", r->uffd);
		put_id(stdout, "n", r->name);
		printf(" %llu\n", (unsigned long long)r->bits);
	}
	if (!text && len && fwrite(buf, 1, len, stdout) != len)
		return fail(1, "writing the output failed: %s", strerror(errno));
	return 0;
}

/* --serve: one capture per process id read from stdin, each answer ended by "." or
 * "! STATUS". Loading failures end the program with their status. */
static int serve(int text)
{
	char line[64], *end;
	int err = load();
	size_t len;

	/* The first line says whether the program loaded: "+" or "! STATUS". */
	printf(err ? "! %d\n" : "+\n", err);
	if (fflush(stdout) || err)
		return err ? err : 1;
	while (fgets(line, sizeof line, stdin)) {
		long pid = strtol(line, &end, 10);
		if (pid <= 0 || (*end && *end != '\n'))
			err = fail(2, "a process id a line, not %.*s", (int)strcspn(line, "\n"), line);
		else
			err = capture(pid, &len);
		if (!err)
			err = put_records(len, text);
		if (err)
			printf("! %d\n", err);
		else
			fputs(".\n", stdout);
		if (fflush(stdout))
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int text = 0, server = 0, err;
	long pid = 0;
	size_t len;
	char *end;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--text"))
			text = 1;
		else if (!strcmp(argv[i], "--serve"))
			server = 1;
		else if (!pid && (pid = strtol(argv[i], &end, 10)) > 0 && !*end)
			;
		else
			return fail(2, "usage: kview PID [--text] | kview --serve [--text]");
	}
	if (pid <= 0 && !server)
		return fail(2, "usage: kview PID [--text] | kview --serve [--text]");
	timing = getenv("KVIEW_TIMING") != NULL;
	stage("start");
	if (server)
		return serve(text);
	if (kill((pid_t)pid, 0) && errno == ESRCH)
		return fail(6, "no process %ld", pid);
	err = load();
	if (!err)
		err = capture(pid, &len);
	/* Detach everything before anything is printed. */
	if (obj)
		bpf_object__close(obj);
	if (!err)
		err = put_records(len, text);
	if (!err && fflush(stdout))
		err = fail(1, "writing the output failed: %s", strerror(errno));
	stage("renumber and write");
	return err;
}

/* record: stream the mapping calls and page faults of processes (vmascope's BPF
 * recorder; x86_64 only).
 *
 *   record [--follow] [--ring-size BYTES] [--faults MODE] PID...
 *
 * Loads record.bpf.c (embedded as record_obj.h by the build), makes PID... its targets
 * (with --follow, the processes they fork become targets too), attaches, and writes
 * fixed-size binary records (struct rec, little-endian) on stdout:
 *
 *   first   a READY record, once everything is attached;
 *   then    one CALL or FAULT record per event, as the ring buffer hands them over;
 *   last    a TRAILER record with the counts (lost records and the fault filter's);
 *
 * until SIGINT or SIGTERM, until every target has exited, or until the parent is gone
 * (it dies with its parent: PR_SET_PDEATHSIG). Nothing is pinned: the BPF programs and
 * links belong to this process and vanish with it, however it ends.
 *
 * The fault filter (record.bpf.c) is the first the kernel accepts of: maple (a walk of
 * the maple tree, 6.1+), find_vma (bpf_find_vma, 5.17+), page (the first fault per
 * page); --faults MODE forces one (auto: that order). --ring-size sets the
 * ring buffer's size (a power of two, at least a page).
 *
 * Errors: one line on stderr, "record: ...", and the exit status says which:
 *   2 usage, 3 not permitted, 4 no BTF, 6 no such process, 7 not x86_64, 1 other.
 */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "record_obj.h" /* static const unsigned char record_obj[]; (the BPF object) */

#define NSTACK 16
#define NSP 4
#define NTEXT 96
enum { K_CALL, K_FAULT, K_READY, K_TRAILER };
enum { C_LOST_RING, C_LOST_INFLIGHT, C_LOST_TARGETS, C_FAULTS_SEEN, C_FAULTS_KEPT,
       C_FAULTS_BUSY, C_EVENTS, C_COUNTERS };
enum { END_TARGETS, END_SIGNAL, END_PARENT };

struct rec {
	uint64_t ktime;
	uint32_t tgid, tid;
	uint32_t kind, nr;
	uint32_t flags, nstack;
	uint64_t args[6];
	int64_t ret;
	uint64_t dev, ino;
	uint64_t usp;
	uint64_t sp[NSP];
	uint64_t stack[NSTACK];
	char text[NTEXT];
};
_Static_assert(sizeof(struct rec) == 368, "struct rec is 368 bytes");

static char log_buf[65536];
static size_t log_len;
static volatile sig_atomic_t stopping;
static char out[1 << 20];
static size_t out_len;

static int collect_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;
	if (level == LIBBPF_DEBUG)
		return 0;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n > 0 && log_len + (size_t)n < sizeof(log_buf)) {
		memcpy(log_buf + log_len, line, (size_t)n);
		log_len += (size_t)n;
		log_buf[log_len] = 0;
	}
	if (getenv("RECORD_DEBUG"))
		fputs(line, stderr);
	return 0;
}

static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fputs("record: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void flush_out(void)
{
	size_t off = 0;
	while (off < out_len) {
		ssize_t n = write(1, out + off, out_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			exit(errno == EPIPE ? 0 : 1);  /* the reader is gone */
		off += (size_t)n;
	}
	out_len = 0;
}

static void put(const void *data, size_t len)
{
	if (out_len + len > sizeof(out))
		flush_out();
	memcpy(out + out_len, data, len);
	out_len += len;
}

static int on_record(void *ctx, void *data, size_t len)
{
	(void)ctx;
	if (len == sizeof(struct rec))
		put(data, len);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);  /* the clock of bpf_ktime_get_ns */
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A process's tgid from /proc/PID/status (PID may name a thread), or -1. */
static long tgid_of(long pid)
{
	char path[64], line[256];
	long tgid = -1;
	FILE *fh;
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	fh = fopen(path, "r");
	if (!fh)
		return -1;
	while (fgets(line, sizeof(line), fh))
		if (!strncmp(line, "Tgid:", 5)) {
			tgid = strtol(line + 5, NULL, 10);
			break;
		}
	fclose(fh);
	return tgid;
}

/* Whether process PID is still alive (not gone, not a zombie). */
static int alive(long pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Set the .rodata variable NAME of the object (before the load). */
static void set_rodata(struct bpf_object *obj, const char *name, const void *val, size_t len)
{
	struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *map;
	const struct btf_type *sec;
	const struct btf_var_secinfo *vs;
	char *data = NULL;
	size_t size = 0;
	int id;

	bpf_object__for_each_map(map, obj) {
		const char *mn = bpf_map__name(map);
		size_t nl = strlen(mn);
		if (nl >= 7 && !strcmp(mn + nl - 7, ".rodata"))
			data = bpf_map__initial_value(map, &size);
	}
	id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -1;
	if (!data || id < 0)
		die(1, "the BPF object has no .rodata");
	sec = btf__type_by_id(btf, id);
	vs = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *var = btf__type_by_id(btf, vs->type);
		if (!strcmp(btf__name_by_offset(btf, var->name_off), name)) {
			if (vs->offset + len > size || vs->size != len)
				die(1, "the BPF object's %s has the wrong size", name);
			memcpy(data + vs->offset, val, len);
			return;
		}
	}
	die(1, "the BPF object has no %s", name);
}

/* The fault filters (the READY record's args[0]). */
enum { M_FIND_VMA = 1, M_PAGE = 2, M_MAPLE = 3 };
static const char *const mode_progs[4][3] = {
	[M_FIND_VMA] = {"fault_vma", "fault_vma_k"},
	[M_PAGE] = {"fault_page", "fault_page_k"},
	[M_MAPLE] = {"fault_maple", "fault_maple_k"},
};
static const char *const fault_progs[] = {"fault_vma", "fault_page", "fault_maple",
					  "fault_vma_k", "fault_page_k", "fault_maple_k"};
static struct bpf_link *links[16];
static int nlinks;

static int wanted_prog(const char *name, int mode)
{
	int fault = 0;
	for (size_t i = 0; i < sizeof(fault_progs) / sizeof(*fault_progs); i++)
		fault |= !strcmp(name, fault_progs[i]);
	if (!fault)
		return 1;
	for (int i = 0; i < 3; i++)
		if (mode_progs[mode][i] && !strcmp(name, mode_progs[mode][i]))
			return 1;
	return 0;
}

/* Open, load and attach with fault filter MODE, the targets in place; NULL and *err_out
 * (-errno) when the kernel refuses, with nothing left attached. */
static struct bpf_object *setup(int mode, int follow, uint32_t ring_size, const long *pids,
				int npids, int *err_out)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	uint64_t wake = ring_size / 32 > sizeof(struct rec) ? ring_size / 32 : 0;
	int err, targets_fd;

	obj = bpf_object__open_mem(record_obj, sizeof(record_obj), NULL);
	if (!obj)
		die(1, "cannot open the BPF object: %s", strerror(errno));
	set_rodata(obj, "follow", &follow, sizeof(follow));
	set_rodata(obj, "wake_bytes", &wake, sizeof(wake));
	if (bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "ring"), ring_size))
		die(1, "cannot size the ring buffer");
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, wanted_prog(bpf_program__name(prog), mode));
	log_len = 0;
	log_buf[0] = 0;
	err = bpf_object__load(obj);
	if (err)
		goto fail;
	targets_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "targets"));
	for (int i = 0; i < npids; i++) {
		uint32_t key = (uint32_t)pids[i];
		uint8_t one = 1;
		if (bpf_map_update_elem(targets_fd, &key, &one, BPF_ANY))
			die(1, "cannot add target %ld: %s", pids[i], strerror(errno));
	}
	nlinks = 0;
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link;
		if (!bpf_program__autoload(prog))
			continue;
		link = bpf_program__attach(prog);
		if (!link) {
			err = -errno;
			snprintf(log_buf, sizeof(log_buf), "attaching %s failed: %s",
				 bpf_program__name(prog), strerror(errno));
			while (nlinks)
				bpf_link__destroy(links[--nlinks]);
			goto fail;
		}
		links[nlinks++] = link;
	}
	return obj;
fail:
	bpf_object__close(obj);
	*err_out = err ? err : -EINVAL;
	return NULL;
}

static void usage(void)
{
	die(2, "usage: record [--follow] [--ring-size BYTES] "
	    "[--faults auto|maple|find_vma|page] PID...");
}

int main(int argc, char **argv)
{
	struct bpf_object *obj = NULL;
	struct ring_buffer *rb;
	struct utsname uts;
	struct sigaction sa;
	struct rec r;
	long pids[256];
	int npids = 0, follow = 0, mode = 0, err = 0, targets_fd, counters_fd, end;
	int ncpu;
	uint32_t ring_size = 1U << 25;
	uint64_t totals[C_COUNTERS] = {0}, last_check = 0;
	pid_t ppid = getppid();
	char *endp;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != ppid)
		return 1;  /* the parent is already gone */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--follow")) {
			follow = 1;
		} else if (!strcmp(argv[i], "--ring-size") && i + 1 < argc) {
			unsigned long v = strtoul(argv[++i], &endp, 10);
			if (*endp || v < 4096 || v > (1UL << 30) || (v & (v - 1)))
				die(2, "--ring-size: a power of two from 4096 to 2^30");
			ring_size = (uint32_t)v;
		} else if (!strcmp(argv[i], "--faults") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "page"))
				mode = M_PAGE;
			else if (!strcmp(argv[i], "find_vma"))
				mode = M_FIND_VMA;
			else if (!strcmp(argv[i], "maple"))
				mode = M_MAPLE;
			else if (strcmp(argv[i], "auto"))
				usage();
		} else {
			long pid = strtol(argv[i], &endp, 10);
			if (*endp || pid <= 0 || npids == 256)
				usage();
			pids[npids++] = pid;
		}
	}
	if (!npids)
		usage();
	if (uname(&uts) || strcmp(uts.machine, "x86_64"))
		die(7, "the recorder knows the x86_64 system calls only (this machine is %s)",
		    uts.machine);
	if (access("/sys/kernel/btf/vmlinux", R_OK))
		die(4, "the kernel has no BTF (/sys/kernel/btf/vmlinux: "
		    "CONFIG_DEBUG_INFO_BTF is off)");
	for (int i = 0; i < npids; i++) {
		long tgid = tgid_of(pids[i]);
		if (tgid <= 0)
			die(6, "no process %ld", pids[i]);
		pids[i] = tgid;
	}
	libbpf_set_print(collect_print);

	/* The cheapest fault filter the kernel offers: the maple tree walk (6.1+), else
	 * bpf_find_vma (5.17+), else the first fault per page. */
	for (int m = 0; m < 3; m++) {
		static const int order[3] = {M_MAPLE, M_FIND_VMA, M_PAGE};
		if (mode && mode != order[m])
			continue;
		obj = setup(order[m], follow, ring_size, pids, npids, &err);
		if (obj) {
			mode = order[m];
			break;
		}
		if ((err == -EPERM || err == -EACCES) && (mode || order[m] == M_PAGE))
			die(3, "not permitted to load BPF programs (needs root: CAP_BPF and "
			    "CAP_PERFMON, or CAP_SYS_ADMIN)");
		if (getenv("RECORD_DEBUG"))
			fprintf(stderr, "record: fault filter %d: %s\n", order[m], log_buf);
	}
	if (!obj)
		die(1, "loading the BPF programs failed: %s", strerror(-err));
	targets_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "targets"));
	counters_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "counters"));
	rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "ring")),
			      on_record, NULL, NULL);
	if (!rb)
		die(1, "cannot read the ring buffer: %s", strerror(errno));
	/* A target that was gone before the attach never shows its exit. */
	for (int i = 0; i < npids; i++)
		if (!alive(pids[i])) {
			uint32_t key = (uint32_t)pids[i];
			bpf_map_delete_elem(targets_fd, &key);
		}

	/* A pipe of 1 MiB (the usual limit), not 64 KiB: far fewer switches to the reader. */
	fcntl(1, F_SETPIPE_SZ, 1 << 20);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&r, 0, sizeof(r));
	r.kind = K_READY;
	r.ktime = now_ns();
	r.tgid = (uint32_t)getpid();
	r.args[0] = (uint64_t)mode;
	r.args[1] = ring_size;
	r.args[2] = (uint64_t)follow;
	put(&r, sizeof(r));
	flush_out();

	end = END_SIGNAL;
	while (!stopping) {
		uint32_t key;
		uint64_t t;
		err = ring_buffer__poll(rb, 50);
		if (err < 0 && err != -EINTR)
			die(1, "reading the ring buffer failed: %s", strerror(-err));
		ring_buffer__consume(rb);  /* what is below the wake-up threshold */
		flush_out();
		t = now_ns();
		if (t - last_check < 50000000ULL)
			continue;
		last_check = t;
		if (getppid() != ppid) {
			end = END_PARENT;
			break;
		}
		if (bpf_map_get_next_key(targets_fd, NULL, &key) && errno == ENOENT) {
			end = END_TARGETS;
			break;
		}
	}
	ring_buffer__consume(rb);

	ncpu = libbpf_num_possible_cpus();
	if (ncpu > 0) {
		uint64_t *vals = calloc((size_t)ncpu, sizeof(uint64_t));
		for (uint32_t c = 0; vals && c < C_COUNTERS; c++) {
			if (bpf_map_lookup_elem(counters_fd, &c, vals))
				continue;
			for (int i = 0; i < ncpu; i++)
				totals[c] += vals[i];
		}
		free(vals);
	}
	memset(&r, 0, sizeof(r));
	r.kind = K_TRAILER;
	r.ktime = now_ns();
	r.tgid = (uint32_t)getpid();
	r.nr = (uint32_t)end;
	for (int c = 0; c < 6; c++)
		r.args[c] = totals[c];
	r.sp[0] = totals[C_EVENTS];
	put(&r, sizeof(r));
	flush_out();
	ring_buffer__free(rb);
	while (nlinks)
		bpf_link__destroy(links[--nlinks]);
	bpf_object__close(obj);
	return 0;
}

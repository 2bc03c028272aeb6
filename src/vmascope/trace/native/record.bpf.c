/* The BPF side of vmascope's recorder: the mapping calls and page faults of a set of
 * processes (x86_64 only: the system call numbers and struct pt_regs are x86_64's).
 *
 * CO-RE, like the kernel view (procfs/native/kview.bpf.c): the kernel structs below are
 * a minimal hand-written subset marked preserve_access_index, relocated by name against
 * the running kernel's BTF when the program is loaded.
 *
 * Programs (BTF tracepoints, Linux 5.11+):
 *   sys_enter  a wanted call of a target thread: its number, arguments, the user stack
 *              (frame-pointer walk), the first words at the user stack pointer, and for
 *              mmap of a file the file's identity, for prctl(PR_SET_VMA_ANON_NAME) and
 *              memfd_create the name, for execve the path; kept per thread in
 *              ``inflight`` until the exit. exit and exit_group are sent at once.
 *   sys_exit   the call's record with its result goes to the ring buffer.
 *   fault_*    a user page fault that can change the VMAs: no VMA at the address (stack
 *              growth, a crash), or a private VMA (no VM_SHARED) without an anon_vma yet.
 *              The loader uses one of three ways to look at the VMA: fault_maple (a
 *              walk of the maple tree, 6.1+), else fault_vma (bpf_find_vma, 5.17+,
 *              several times dearer: with interrupts off it unlocks the mmap_lock
 *              through an irq_work), else fault_page (no look at all: the first fault
 *              per page).
 *   fork/exit  with following on, a new process forked by a target becomes a target;
 *              a target whose last thread exits is removed.
 *
 * Every record is a struct rec (the loader's and trace/bpf.py's layout). A record that
 * finds the ring buffer full, or a call that finds ``inflight`` full, is counted in
 * ``counters``; the loader reports the counts at the end.
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define PAI __attribute__((preserve_access_index))

/* From the UAPI linux/bpf.h (not included: it needs the host's asm headers). */
enum {
	BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_PERCPU_ARRAY = 6, BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_USER_STACK (1ULL << 8)
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

struct pt_regs {
	unsigned long bp, r10, r9, r8, dx, si, di, ip, sp;
} PAI;
typedef struct { int counter; } atomic_t;
struct signal_struct { atomic_t live; } PAI;
struct super_block { __u32 s_dev; } PAI;
struct inode { unsigned long i_ino; struct super_block *i_sb; } PAI;
struct qstr { const unsigned char *name; } PAI;
struct dentry { struct qstr d_name; } PAI;
struct path { struct dentry *dentry; } PAI;
struct file { struct inode *f_inode; struct path f_path; } PAI;
struct fdtable { unsigned int max_fds; struct file **fd; } PAI;
struct files_struct { struct fdtable *fdt; } PAI;
struct anon_vma;
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
	struct anon_vma *anon_vma;
} PAI;
struct maple_tree { void *ma_root; } PAI;
struct mm_struct { struct maple_tree mm_mt; } PAI;
struct task_struct {
	int pid;
	int tgid;
	struct mm_struct *mm;
	struct files_struct *files;
	struct signal_struct *signal;
} PAI;

/* Keep in step with record.c and trace/bpf.py. */
#define NSTACK 16
#define NSP 4
#define NTEXT 96
#define K_CALL 0
#define K_FAULT 1
#define F_FILE 1   /* dev, ino and text (the dentry's name) are the mmap's file */
#define F_TEXT 2   /* text is the call's string argument */
#define F_RET 4    /* ret is set (the call returned) */
#define F_SP 8     /* sp[] could be read */

struct rec {
	__u64 ktime;
	__u32 tgid, tid;
	__u32 kind, nr;        /* K_*, the system call number (or 0 for a fault) */
	__u32 flags, nstack;   /* F_*, the frames in stack[] */
	__u64 args[6];         /* a fault: address, error code */
	__s64 ret;
	__u64 dev, ino;        /* dev as new_encode_dev(i_sb->s_dev), like st_dev */
	__u64 usp;             /* the user stack pointer */
	__u64 sp[NSP];         /* the first words at the user stack pointer */
	__u64 stack[NSTACK];   /* bpf_get_stack(BPF_F_USER_STACK): ip, then the FP walk */
	char text[NTEXT];
};

/* counters[] (per CPU), summed by the loader. */
enum { C_LOST_RING, C_LOST_INFLIGHT, C_LOST_TARGETS, C_FAULTS_SEEN, C_FAULTS_KEPT,
       C_FAULTS_BUSY, C_EVENTS, C_COUNTERS };

const volatile int follow = 0;
const volatile __u64 wake_bytes = 1 << 20;  /* wake the loader once this much is queued */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 25);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct rec);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);  /* 0: calls and user faults; 1: the kernel's faults */
	__type(key, __u32);
	__type(value, struct rec);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct pagekey { __u32 tgid, pad; __u64 page; };
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pagekey);
	__type(value, __u8);
} pages SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += 1;
}

static __always_inline int is_target(__u32 tgid)
{
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_mmap 9
#define NR_mprotect 10
#define NR_munmap 11
#define NR_brk 12
#define NR_mremap 25
#define NR_madvise 28
#define NR_shmat 30
#define NR_clone 56
#define NR_fork 57
#define NR_vfork 58
#define NR_execve 59
#define NR_exit 60
#define NR_shmdt 67
#define NR_mlock 149
#define NR_munlock 150
#define NR_mlockall 151
#define NR_munlockall 152
#define NR_prctl 157
#define NR_exit_group 231
#define NR_mbind 237
#define NR_set_mempolicy 238
#define NR_memfd_create 319
#define NR_execveat 322
#define NR_mlock2 325
#define NR_pkey_mprotect 329
#define NR_pkey_alloc 330
#define NR_pkey_free 331
#define NR_clone3 435
#define NR_process_madvise 440
#define NR_mseal 462

#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#define MAP_ANONYMOUS 0x20
#define VM_SHARED 0x8
#define PAGE_SHIFT 12

static __always_inline int wanted(long nr)
{
	switch (nr) {
	case NR_mmap: case NR_mprotect: case NR_munmap: case NR_brk: case NR_mremap:
	case NR_madvise: case NR_shmat: case NR_clone: case NR_fork: case NR_vfork:
	case NR_execve: case NR_exit: case NR_shmdt: case NR_mlock: case NR_munlock:
	case NR_mlockall: case NR_munlockall: case NR_prctl: case NR_exit_group:
	case NR_mbind: case NR_set_mempolicy: case NR_memfd_create: case NR_execveat:
	case NR_mlock2: case NR_pkey_mprotect: case NR_pkey_alloc: case NR_pkey_free:
	case NR_clone3: case NR_process_madvise: case NR_mseal:
		return 1;
	}
	return 0;
}

/* The kernel's dev_t (major << 20 | minor) as stat() shows it (new_encode_dev). */
static __always_inline __u64 encode_dev(__u32 dev)
{
	__u32 major = dev >> 20, minor = dev & 0xfffff;
	return (minor & 0xff) | (major << 8) | ((__u64)(minor & ~0xffU) << 12);
}

static __always_inline void read_file(struct rec *r, struct task_struct *task, __u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;
	const unsigned char *name;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffffff]) || !file)
		return;
	r->ino = BPF_CORE_READ(file, f_inode, i_ino);
	r->dev = encode_dev(BPF_CORE_READ(file, f_inode, i_sb, s_dev));
	name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (name)
		bpf_probe_read_kernel_str(r->text, sizeof(r->text), name);
	r->flags |= F_FILE;
}

static __always_inline void user_string(struct rec *r, __u64 ptr)
{
	if (ptr && bpf_probe_read_user_str(r->text, sizeof(r->text), (void *)ptr) > 0)
		r->flags |= F_TEXT;
}

static __always_inline void fill_stack(void *ctx, struct rec *r, struct pt_regs *regs)
{
	long n;

	r->usp = regs->sp;
	if (!bpf_probe_read_user(r->sp, sizeof(r->sp), (void *)r->usp))
		r->flags |= F_SP;
	n = bpf_get_stack(ctx, r->stack, sizeof(r->stack), BPF_F_USER_STACK);
	r->nstack = n > 0 ? (__u64)n >> 3 : 0;
}

static __always_inline void submit(struct rec *src)
{
	struct rec *r = bpf_ringbuf_reserve(&ring, sizeof(*r), 0);
	__u64 flags;

	if (!r) {
		count(C_LOST_RING);
		return;
	}
	__builtin_memcpy(r, src, sizeof(*r));
	count(C_EVENTS);
	flags = bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA) >= wake_bytes
		? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, flags);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long nr)
{
	__u64 id, a0, a1, a4;
	struct rec *r;
	__u32 zero = 0, tid;

	if (!wanted(nr))
		return 0;
	id = bpf_get_current_pid_tgid();
	if (!is_target(id >> 32))
		return 0;
	a0 = regs->di;
	a1 = regs->si;
	a4 = regs->r8;
	if (nr == NR_prctl && a0 != PR_SET_VMA)
		return 0;
	r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	tid = (__u32)id;
	r->ktime = bpf_ktime_get_ns();
	r->tgid = id >> 32;
	r->tid = tid;
	r->kind = K_CALL;
	r->nr = nr;
	r->args[0] = a0;
	r->args[1] = a1;
	r->args[2] = regs->dx;
	r->args[3] = regs->r10;
	r->args[4] = a4;
	r->args[5] = regs->r9;
	fill_stack(ctx, r, regs);
	switch (nr) {
	case NR_mmap:
		if (!(r->args[3] & MAP_ANONYMOUS) && (__s32)a4 >= 0)
			read_file(r, bpf_get_current_task_btf(), (__u32)a4);
		break;
	case NR_prctl:
		if (a1 == PR_SET_VMA_ANON_NAME)
			user_string(r, a4);
		break;
	case NR_memfd_create:
	case NR_execve:
		user_string(r, a0);
		break;
	case NR_execveat:
		user_string(r, a1);
		break;
	case NR_clone3: {
		/* args[0] becomes clone_args.flags (the first field), as strace shows it:
		 * what tells a thread from a process (trace/events.py) */
		__u64 flags = 0;

		bpf_probe_read_user(&flags, sizeof(flags), (void *)a0);
		r->args[0] = flags;
		break;
	}
	case NR_exit:
	case NR_exit_group:
		submit(r);
		return 0;
	}
	if (bpf_map_update_elem(&inflight, &tid, r, BPF_ANY))
		count(C_LOST_INFLIGHT);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct rec *r;

	r = bpf_map_lookup_elem(&inflight, &tid);
	if (!r)
		return 0;
	r->ret = ret;
	r->flags |= F_RET;
	r->ktime = bpf_ktime_get_ns();
	submit(r);
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}

static __always_inline void fill_fault(void *ctx, struct rec *r, __u64 id, __u64 address,
				       __u64 error_code)
{
	long n;

	__builtin_memset(r, 0, sizeof(*r));
	r->ktime = bpf_ktime_get_ns();
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->kind = K_FAULT;
	r->args[0] = address;
	r->args[1] = error_code;
	n = bpf_get_stack(ctx, r->stack, sizeof(r->stack), BPF_F_USER_STACK);
	r->nstack = n > 0 ? (__u64)n >> 3 : 0;
}

struct vma_verdict { int keep; };

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_verdict *v = data;

	v->keep = !(vma->vm_flags & VM_SHARED) && !vma->anon_vma;
	return 0;
}

static __always_inline int fault_emit(void *ctx, __u64 id, __u64 address, __u64 error_code,
				      __u32 slot)
{
	struct rec *r = bpf_map_lookup_elem(&scratch, &slot);

	if (!r)
		return 0;
	count(C_FAULTS_KEPT);
	fill_fault(ctx, r, id, address, error_code);
	submit(r);
	return 0;
}

static __always_inline int fault_vma_body(void *ctx, unsigned long address,
					 unsigned long error_code, __u32 slot)
{
	struct vma_verdict v = {};
	__u64 id = bpf_get_current_pid_tgid();
	long err;

	if (!is_target(id >> 32))
		return 0;
	count(C_FAULTS_SEEN);
	err = bpf_find_vma(bpf_get_current_task_btf(), address, vma_cb, &v, 0);
	if (err == -16 /* EBUSY: mmap_lock taken; keep the fault, to be safe */) {
		count(C_FAULTS_BUSY);
		v.keep = 1;
	} else if (err) {  /* ENOENT: no VMA at the address */
		v.keep = 1;
	}
	if (!v.keep)
		return 0;
	return fault_emit(ctx, id, address, error_code, slot);
}

/* The VMA at ADDRESS in the current process's maple tree (6.1+), or NULL: the walk of
 * mtree_range_walk (lib/maple_tree.c) with plain reads. It runs in the fault's
 * tracepoint, with interrupts off, so the nodes it reads cannot be freed under it (they
 * are freed after an RCU grace period); a node changed by another thread meanwhile can
 * give a stale answer, as any lookup without the lock. The node layouts are the 64-bit
 * ones: range_64 (leaf or not), 15 pivots then 16 slots; arange_64, 9 pivots then 10
 * slots; each after the parent pointer. */
#define MAPLE_NODE_MASK 255UL
#define MAPLE_DEPTH 8
enum { maple_dense, maple_leaf_64, maple_range_64, maple_arange_64 };

static __always_inline struct vm_area_struct *maple_vma(struct task_struct *task,
							 __u64 address)
{
	unsigned long entry = (unsigned long)BPF_CORE_READ(task, mm, mm_mt.ma_root);
	unsigned long pivots[15];
	struct vm_area_struct *vma;
	int level, i, type, npivots;
	void *node;

	for (level = 0; level < MAPLE_DEPTH; level++) {
		/* The root is a node when it is marked so (MAPLE_ROOT_NODE); below it, slots
		 * of inner nodes are always nodes (type in bits 3-6). */
		if (level == 0 && ((entry & 3) != 2 || entry <= 4096))
			return address == 0 ? (void *)entry : NULL;  /* a lone entry */
		if (!entry)
			return NULL;
		node = (void *)(entry & ~MAPLE_NODE_MASK);
		type = (entry >> 3) & 0xf;
		if (type == maple_arange_64)
			npivots = 9;
		else if (type == maple_range_64 || type == maple_leaf_64)
			npivots = 15;
		else
			return NULL;
		if (bpf_probe_read_kernel(pivots, sizeof(pivots), node + 8))
			return NULL;
		for (i = 0; i < 15; i++) {
			if (i == npivots || pivots[i] >= address || (i > 0 && !pivots[i]))
				break;
		}
		if (bpf_probe_read_kernel(&entry, sizeof(entry), node + 8 + 8 * npivots + 8 * i))
			return NULL;
		if (type == maple_leaf_64)
			break;
	}
	if (level == MAPLE_DEPTH || !entry)
		return NULL;
	vma = (struct vm_area_struct *)entry;
	if (BPF_CORE_READ(vma, vm_start) > address || BPF_CORE_READ(vma, vm_end) <= address)
		return NULL;
	return vma;
}

static __always_inline int fault_maple_body(void *ctx, unsigned long address,
					 unsigned long error_code, __u32 slot)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vm_area_struct *vma;

	if (!is_target(id >> 32))
		return 0;
	count(C_FAULTS_SEEN);
	vma = maple_vma((struct task_struct *)bpf_get_current_task(), address);
	if (vma && ((BPF_CORE_READ(vma, vm_flags) & VM_SHARED) || BPF_CORE_READ(vma, anon_vma)))
		return 0;
	return fault_emit(ctx, id, address, error_code, slot);
}

static __always_inline int fault_page_body(void *ctx, unsigned long address,
					 unsigned long error_code, __u32 slot)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pagekey key = {};
	__u8 one = 1;

	if (!is_target(id >> 32))
		return 0;
	count(C_FAULTS_SEEN);
	key.tgid = id >> 32;
	key.page = address >> PAGE_SHIFT;
	if (bpf_map_update_elem(&pages, &key, &one, BPF_NOEXIST))
		return 0;  /* seen before */
	return fault_emit(ctx, id, address, error_code, slot);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	__u8 one = 1;

	if (!follow || ctgid == ptgid || !is_target(ptgid))
		return 0;
	if (bpf_map_update_elem(&targets, &ctgid, &one, BPF_ANY))
		count(C_LOST_TARGETS);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid, tid = task->pid;

	if (!is_target(tgid))
		return 0;
	bpf_map_delete_elem(&inflight, &tid);
	if (BPF_CORE_READ(task, signal, live.counter) == 0)
		bpf_map_delete_elem(&targets, &tgid);
	return 0;
}

/* A thread that is not the leader execs: it takes the leader's pid (de_thread), so its
 * pending execve moves to the new tid. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, int old_pid)
{
	__u32 old = old_pid, tid = task->pid;
	struct rec *r;

	if (old == tid || !is_target(task->tgid))
		return 0;
	r = bpf_map_lookup_elem(&inflight, &old);
	if (!r)
		return 0;
	r->tid = tid;
	bpf_map_update_elem(&inflight, &tid, r, BPF_ANY);
	bpf_map_delete_elem(&inflight, &old);
	return 0;
}

/* The programs: each filter for faults taken in user mode and for write faults the
 * kernel takes on a user address on the process's behalf (copy_to_user in read(),
 * recv() and the like: the first write to a fresh buffer is often the kernel's). A read
 * by the kernel gives no anon_vma, and BPF's own reads of user memory (the stacks) are
 * reads, so they never come back here; the kernel's faults have a scratch record of
 * their own all the same. */
#define TASK_SIZE_MAX ((1UL << 47) - (1UL << PAGE_SHIFT))
#define X86_PF_WRITE 2  /* arch/x86/include/asm/trap_pf.h */
#define FAULT_PROGRAMS(filter)							\
SEC("tp_btf/page_fault_user")							\
int BPF_PROG(filter, unsigned long address, struct pt_regs *regs,		\
	     unsigned long error_code)						\
{										\
	return filter##_body(ctx, address, error_code, 0);			\
}										\
										\
SEC("tp_btf/page_fault_kernel")							\
int BPF_PROG(filter##_k, unsigned long address, struct pt_regs *regs,		\
	     unsigned long error_code)						\
{										\
	if (address >= TASK_SIZE_MAX || !(error_code & X86_PF_WRITE))		\
		return 0;							\
	return filter##_body(ctx, address, error_code, 1);			\
}

FAULT_PROGRAMS(fault_vma)
FAULT_PROGRAMS(fault_maple)
FAULT_PROGRAMS(fault_page)

char LICENSE[] SEC("license") = "GPL";

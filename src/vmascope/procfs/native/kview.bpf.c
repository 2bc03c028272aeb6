/* The kernel's view of one process's VMAs: a BPF task_vma iterator (Linux 5.12+).
 *
 * CO-RE: the kernel structs below are a minimal hand-written subset marked with
 * preserve_access_index, so libbpf relocates every field by name against the running
 * kernel's BTF when the program is loaded. Fields that only some kernels have (the
 * anon_vma's degree before 6.2, num_children/num_active_vmas since; anon_name with
 * CONFIG_ANON_VMA_NAME; vm_policy with CONFIG_NUMA; the userfaultfd context with
 * CONFIG_USERFAULTFD) are read only when bpf_core_field_exists says they are there.
 *
 * One fixed record (struct kv_rec) per VMA is written to the seq_file; pointers are
 * written as they are and renumbered by the loader before anything leaves it.
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

#define PAI __attribute__((preserve_access_index))

struct list_head { struct list_head *next; struct list_head *prev; } PAI;
struct super_block { __u32 s_dev; } PAI;
struct inode { unsigned long i_ino; struct super_block *i_sb; } PAI;
struct file { struct inode *f_inode; } PAI;
struct anon_vma {
	struct anon_vma *root;
	unsigned long num_children;     /* 6.2+ */
	unsigned long num_active_vmas;  /* 6.2+ */
	unsigned int degree;            /* before 6.2 */
} PAI;
struct vm_operations_struct { void (*close)(void *vma); } PAI;
struct vm_userfaultfd_ctx { void *ctx; } PAI;
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
	struct list_head anon_vma_chain;
	struct anon_vma *anon_vma;
	const struct vm_operations_struct *vm_ops;
	unsigned long vm_pgoff;
	struct file *vm_file;
	void *vm_policy;
	struct vm_userfaultfd_ctx vm_userfaultfd_ctx;
	void *anon_name;
} PAI;
struct task_struct { int pid; int tgid; } PAI;
struct seq_file;
struct bpf_iter_meta { struct seq_file *seq; __u64 session_id; __u64 seq_num; } PAI;
struct bpf_iter__task_vma {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	struct vm_area_struct *vma;
} PAI;

/* Keep in step with the loader (kview.c). */
#define KV_CLOSE      1ULL  /* vm_ops->close is set */
#define KV_DEGREE     2ULL  /* children holds the old anon_vma degree */
#define KV_NOCOUNTS   4ULL  /* the anon_vma has neither degree nor num_children */
#define KV_CHAINMAX   8ULL  /* the chain is CHAIN_MAX long or longer */
#define KV_NOPOLICY  16ULL  /* no vm_policy field (CONFIG_NUMA off) */
#define KV_NOUFFD    32ULL  /* no userfaultfd context field */
#define KV_NONAME    64ULL  /* no anon_name field (CONFIG_ANON_VMA_NAME off) */
#define CHAIN_MAX 64

struct kv_rec {
	__u64 start, end, flags, pgoff, dev, ino, file, anon_vma, root, chain,
	      children, active, policy, uffd, name, bits;
};

/* The one writable global (.bss), set by the loader before each capture: the process
 * to read and the one of its threads whose iteration emits (0: the first seen). */
struct kv_ctl {
	int tgid;
	int emitting_tid;
} ctl = {};

SEC("iter/task_vma")
int kview(struct bpf_iter__task_vma *ctx)
{
	struct vm_area_struct *vma = ctx->vma;
	struct task_struct *task = ctx->task;
	struct seq_file *seq = ctx->meta->seq;
	const struct vm_operations_struct *ops;
	struct kv_rec r = {};
	struct anon_vma *av;
	struct file *file;
	struct list_head *head, *p;
	int tid, i;

	if (!vma || !task)
		return 0;
	if (task->tgid != ctl.tgid)
		return 0;
	/* Threads share the process's VMAs: report them through one task only. */
	tid = task->pid;
	if (!ctl.emitting_tid)
		ctl.emitting_tid = tid;
	if (tid != ctl.emitting_tid)
		return 0;

	/* Direct loads through the BTF-typed pointers (the verifier makes them faulting-
	 * safe loads), far cheaper than a bpf_probe_read_kernel per field. */
	r.start = vma->vm_start;
	r.end = vma->vm_end;
	r.flags = vma->vm_flags;
	r.pgoff = vma->vm_pgoff;
	file = vma->vm_file;
	if (file) {
		r.file = (__u64)file;
		r.ino = file->f_inode->i_ino;
		r.dev = file->f_inode->i_sb->s_dev;
	}
	av = vma->anon_vma;
	if (av) {
		r.anon_vma = (__u64)av;
		r.root = (__u64)av->root;
		if (bpf_core_field_exists(av->num_children)) {
			r.children = av->num_children;
			r.active = av->num_active_vmas;
		} else if (bpf_core_field_exists(av->degree)) {
			r.children = av->degree;
			r.bits |= KV_DEGREE;
		} else {
			r.bits |= KV_NOCOUNTS;
		}
	}
	head = &vma->anon_vma_chain;
	p = vma->anon_vma_chain.next;
	for (i = 0; i < CHAIN_MAX && p && p != head; i++)
		p = p->next;
	r.chain = i;
	if (i == CHAIN_MAX)
		r.bits |= KV_CHAINMAX;
	if (bpf_core_field_exists(vma->vm_policy))
		r.policy = (__u64)vma->vm_policy;
	else
		r.bits |= KV_NOPOLICY;
	if (bpf_core_field_exists(vma->vm_userfaultfd_ctx.ctx))
		r.uffd = (__u64)vma->vm_userfaultfd_ctx.ctx;
	else
		r.bits |= KV_NOUFFD;
	if (bpf_core_field_exists(vma->anon_name))
		r.name = (__u64)vma->anon_name;
	else
		r.bits |= KV_NONAME;
	ops = vma->vm_ops;
	if (ops && ops->close)
		r.bits |= KV_CLOSE;
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

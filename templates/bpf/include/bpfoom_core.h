/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel types BPF OOM policies read, as CO-RE declarations.
 *
 * Only the fields the policies use are declared; preserve_access_index makes
 * clang record each access as a relocation that libbpf resolves against the
 * running kernel's BTF at load time, so one object runs on every kernel that
 * carries the hook, whatever its struct layouts. No generated vmlinux.h.
 */
#ifndef BPFOOM_CORE_H
#define BPFOOM_CORE_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0

/* libbpf's bpf_helper_defs.h names these in prototypes we never call. */
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* The map types policies use (values of the kernel's enum bpf_map_type, stable ABI). */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#define BPFOOM_COMM_LEN 16
#define BPFOOM_POLICY_NAME_LEN 16      /* POLICY_NAME_LEN, NUL included */

/* Return values of bpf_oom_evaluate_task() (the seed document spells the last BPF_EAVL_SELECT). */
enum bpfoom_verdict {
	NO_BPF_POLICY = 0,      /* let the kernel compare oom_badness() with oc->chosen_points */
	BPF_EVAL_ABORT = 1,     /* abort the scan: no victim this round */
	BPF_EVAL_NEXT = 2,      /* skip this task */
	BPF_EVAL_SELECT = 3,    /* this task becomes oc->chosen */
};

struct kuid {
	__u32 val;
} __attribute__((preserve_access_index));

struct kernfs_iattrs {
	struct kuid ia_uid;
} __attribute__((preserve_access_index));

struct kernfs_node {
	const char *name;
	struct kernfs_node *parent;     /* __parent since Linux 6.15: see kernfs_parent() */
	__u64 id;
	struct kernfs_iattrs *iattr;    /* NULL until chown or a non-root mkdir: owned by root */
} __attribute__((preserve_access_index));

/* Linux 6.15 renamed kernfs_node.parent __parent (RCU-protected since); CO-RE picks the field the kernel has. */
struct kernfs_node___6_15 {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct cred {
	struct kuid uid;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long total_vm;
} __attribute__((preserve_access_index));

struct seq_file;

/* The context of an iter/task program (bpfoom_explain): one call per task of the system. */
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;       /* NULL once, after the last task */
} __attribute__((preserve_access_index));

struct signal_struct {
	short oom_score_adj;
	struct mm_struct *oom_mm;       /* set once the thread group is an OOM victim */
} __attribute__((preserve_access_index));

#define OOM_SCORE_ADJ_MIN (-1000)

#define PF_KTHREAD 0x00200000

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	char comm[BPFOOM_COMM_LEN];
	unsigned long long start_time;
	unsigned long long start_boottime;      /* what /proc/PID/stat's starttime counts, in ns */
	struct mm_struct *mm;
	struct signal_struct *signal;
	const struct cred *cred;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

struct mem_cgroup;

struct oom_control {
	struct mem_cgroup *memcg;
	unsigned long totalpages;
	struct task_struct *chosen;
	long chosen_points;
} __attribute__((preserve_access_index));

/*
 * The layout user space reads: bpfoomctl declares the same types (Identity, Counters,
 * Event); tests/compile/test_shared_types.py checks both against a compiled policy.
 */
struct bpfoom_identity {
	char name[BPFOOM_POLICY_NAME_LEN];
	char hash[65];                  /* sha256 of the rendered source, hex */
};

struct bpfoom_counters {
	__u64 evaluations;              /* calls of the evaluate program */
	__u64 selections;               /* BPF_EVAL_SELECT verdicts */
	__u64 ooms;                     /* OOMs the policy saw: named (enforce) or recorded (shadow) */
	__u64 shadow_agree;             /* shadow: the policy would have killed the kernel's victim */
	__u64 shadow_disagree;          /* shadow: it would have killed another task */
	__u64 shadow_no_victim;         /* shadow: it would have found none (enforced: no kill; global: a panic) */
	__u64 shadow_not_comparable;    /* shadow: the kernel decided without asking (see bpfoom_shadow_outcome) */
};

/*
 * What a task's rank rested on, for explain, the journal and shadow records
 * (docs/docsite/rst/policies.rst, "Who may protect a task"). matched: the matchers that
 * decided, a mask of enum bpfoom_matcher; cgroup_*: the named cgroup that
 * matched, if one did.
 */
enum bpfoom_matcher {
	BPFOOM_MATCHED_COMM = 1,        /* the command name: chosen by the process itself */
	BPFOOM_MATCHED_CGROUP = 2,      /* a named unit or slice the task runs under */
	BPFOOM_MATCHED_UID = 4,         /* the task's uid: vouched for by the kernel */
	BPFOOM_MATCHED_TARGET = 8,      /* the process a host input names (select_pid), by PID and start time */
};

struct bpfoom_basis {
	__u32 matched;                  /* enum bpfoom_matcher bits; 0: the template's default rank */
	__u32 uid;                      /* the task's uid */
	__u64 cgroup_id;                /* the named cgroup that matched (kernfs id), 0: none */
	__u32 cgroup_owner;             /* its owner's uid */
	__u32 cgroup_vouched;           /* 1: it and every ancestor are owned by root */
};

/* A unit or slice name a policy gives, as the agent resolved it on the host: the value of a units map. */
struct bpfoom_unit {
	__s32 value;                    /* what the template makes of tasks under it (a rank, or 1: listed) */
	__u32 _pad;
};

/* One ring-buffer event per task a policy selected (it replaced oc->chosen). */
struct bpfoom_event {
	__u32 pid;
	__u32 displaced_pid;            /* 0: no victim had been chosen yet */
	__s32 rank;
	__s32 displaced_rank;
	__u64 cgroup_id;
	struct bpfoom_basis basis;      /* what the selected task's rank rested on */
	char comm[BPFOOM_COMM_LEN];
	char displaced_comm[BPFOOM_COMM_LEN];
};

/* What a shadow policy found in one OOM: one record per out_of_memory() call that chose or scanned. */
enum bpfoom_shadow_outcome {
	BPFOOM_SHADOW_AGREE = 1,
	BPFOOM_SHADOW_DISAGREE = 2,
	BPFOOM_SHADOW_NO_VICTIM = 3,
	BPFOOM_SHADOW_ORIGIN_TASK = 4,  /* not comparable: the kernel took an oom_task_origin() task first */
	BPFOOM_SHADOW_ABORTED = 5,      /* not comparable: the scan stopped, an earlier victim is still dying */
	BPFOOM_SHADOW_NO_SCAN = 6,      /* not comparable: no scan (oom_kill_allocating_task, an exiting allocator) */
};

struct bpfoom_shadow_record {
	__u32 outcome;                  /* enum bpfoom_shadow_outcome */
	__u32 memcg;                    /* 1: a memcg OOM, 0: a global one */
	__u32 candidates;               /* tasks the kernel scored (oom_badness) */
	__u32 policy_pid;               /* the policy's choice, 0: none */
	__s32 policy_rank;
	__u32 kernel_pid;               /* oc->chosen at oom_kill_process(), 0: none */
	__u64 policy_cgroup_id;
	__u64 kernel_cgroup_id;
	char policy_comm[BPFOOM_COMM_LEN];
	char kernel_comm[BPFOOM_COMM_LEN];
	struct bpfoom_basis policy_basis;       /* what the policy's choice rested on */
};

/* One task as `bpfoomctl explain` sees it, written by the iter/task program. */
struct bpfoom_candidate {
	__u32 pid;
	__s32 rank;                     /* the policy's rank; BPFOOM_RANK_NEVER as the rule returned it */
	__s32 oom_score_adj;
	__u32 _pad;
	__u64 cgroup_id;
	__u64 start_time;
	char comm[BPFOOM_COMM_LEN];
	struct bpfoom_basis basis;      /* what its rank rested on */
};

/* The kfunc of the hook series: names the policy in the kernel's OOM report. */
/* Weak: kernels without the hook resolve it to nothing, and the naming program is then never loaded. */
extern void set_oom_policy_name(struct oom_control *oc, const char *name, size_t name__sz)
	__attribute__((section(".ksyms"))) __attribute__((weak));

#endif /* BPFOOM_CORE_H */

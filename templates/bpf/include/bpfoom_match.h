/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Matchers the policy templates rank tasks with. Every loop is bounded by a
 * constant: these run under oom_lock, while the machine is out of memory.
 */
#ifndef BPFOOM_MATCH_H
#define BPFOOM_MATCH_H

#define BPFOOM_CGROUP_NAME_LEN 64       /* names are hashed on their first 63 bytes, zero-padded */
#define BPFOOM_CGROUP_DEPTH 8           /* a task's cgroup and up to 7 ancestors */
#define BPFOOM_FNV_OFFSET 0xcbf29ce484222325ULL
#define BPFOOM_FNV_PRIME 0x100000001b3ULL

/*
 * Matching is branch-free over fixed-size, zero-padded buffers: the verifier
 * then checks a short straight line instead of one path per character, and
 * a policy loads in a fraction of the time (see policy_catalog.py for the
 * other half of each encoding).
 */

/* comm of a task as two words, zero-padded after its NUL */
struct bpfoom_comm {
	__u64 word[2];
};

static __always_inline void task_comm_words(struct task_struct *task, struct bpfoom_comm *comm)
{
	comm->word[0] = 0;
	comm->word[1] = 0;
	bpf_probe_read_kernel_str(comm->word, BPFOOM_COMM_LEN, task->comm);
}

/*
 * A comm pattern: its bytes and a mask of the bytes that must match. An exact
 * name masks its terminating NUL too; a prefix masks only its own bytes.
 */
struct bpfoom_comm_pattern {
	__u64 word[2];
	__u64 mask[2];
};

static __always_inline bool comm_matches(const struct bpfoom_comm *comm, const volatile struct bpfoom_comm_pattern *pattern)
{
	return !(((comm->word[0] & pattern->mask[0]) ^ pattern->word[0]) |
		 ((comm->word[1] & pattern->mask[1]) ^ pattern->word[1]));
}

/* comm of a task, NUL-terminated (for events) */
static __always_inline void task_comm(struct task_struct *task, char comm[BPFOOM_COMM_LEN])
{
	bpf_probe_read_kernel_str(comm, BPFOOM_COMM_LEN, task->comm);
}

/*
 * FNV-1a 64 of a kernfs node's name, over BPFOOM_CGROUP_NAME_LEN bytes: the
 * name's first 63 bytes, zero-padded. The same function as
 * policy_catalog.cgroup_name_hash().
 */
static __always_inline __u64 kernfs_name_hash(struct kernfs_node *kn)
{
	__u8 name[BPFOOM_CGROUP_NAME_LEN] = {};
	__u64 hash = BPFOOM_FNV_OFFSET;

	bpf_probe_read_kernel_str(name, sizeof(name), kn->name);
	for (int i = 0; i < BPFOOM_CGROUP_NAME_LEN; i++) {
		hash ^= name[i];
		hash *= BPFOOM_FNV_PRIME;
	}
	return hash;
}

/*
 * Index in hashes[] of the nearest cgroup (the task's own, then its parents)
 * whose name hashes to an entry, or -1. Names are unit and slice names
 * ("nginx.service", "batch.slice"): systemd gives each one exactly one cgroup.
 */
static __always_inline int task_cgroup_match(struct task_struct *task, const volatile __u64 *hashes, int count)
{
	struct kernfs_node *kn = task->cgroups->dfl_cgrp->kn;

	for (int depth = 0; depth < BPFOOM_CGROUP_DEPTH && kn; depth++) {
		__u64 hash = kernfs_name_hash(kn);

		for (int i = 0; i < count; i++)
			if (hashes[i] == hash)
				return i;
		kn = kn->parent;
	}
	return -1;
}

static __always_inline bool uid_in(struct task_struct *task, const volatile __u32 *uids, int count)
{
	__u32 uid = task->cred->uid.val;

	for (int i = 0; i < count; i++)
		if (uids[i] == uid)
			return true;
	return false;
}

#endif /* BPFOOM_MATCH_H */

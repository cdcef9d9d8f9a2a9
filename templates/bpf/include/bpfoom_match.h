/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Matchers the policy templates rank tasks with. Every loop is bounded by a
 * constant: these run under oom_lock, while the machine is out of memory.
 */
#ifndef BPFOOM_MATCH_H
#define BPFOOM_MATCH_H

#define BPFOOM_CGROUP_NAME_LEN 64       /* longer names are hashed on their first 63 bytes */
#define BPFOOM_CGROUP_DEPTH 8           /* a task's cgroup and up to 7 ancestors */
#define BPFOOM_FNV_OFFSET 0xcbf29ce484222325ULL
#define BPFOOM_FNV_PRIME 0x100000001b3ULL

/* comm of a task, NUL-terminated */
static __always_inline void task_comm(struct task_struct *task, char comm[BPFOOM_COMM_LEN])
{
	bpf_probe_read_kernel_str(comm, BPFOOM_COMM_LEN, task->comm);
}

/* exact: the whole comm equals pattern; otherwise pattern is a prefix of comm */
static __always_inline bool comm_matches(const char *comm, const volatile char *pattern, bool exact)
{
	for (int i = 0; i < BPFOOM_COMM_LEN; i++) {
		if (!pattern[i])
			return !exact || !comm[i];
		if (comm[i] != pattern[i])
			return false;
	}
	return true;
}

/* FNV-1a of a kernfs node's name: the same function as policy_catalog.cgroup_name_hash() */
static __always_inline __u64 kernfs_name_hash(struct kernfs_node *kn)
{
	char name[BPFOOM_CGROUP_NAME_LEN];
	__u64 hash = BPFOOM_FNV_OFFSET;

	if (bpf_probe_read_kernel_str(name, sizeof(name), kn->name) < 0)
		return 0;
	for (int i = 0; i < BPFOOM_CGROUP_NAME_LEN; i++) {
		if (!name[i])
			break;
		hash ^= (__u8)name[i];
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

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Matchers the policy templates rank tasks with. Every loop is bounded by a
 * constant: these run under oom_lock, while the machine is out of memory.
 */
#ifndef BPFOOM_MATCH_H
#define BPFOOM_MATCH_H

#define BPFOOM_CGROUP_NAME_LEN 64       /* names are hashed on their first 63 bytes, zero-padded */
#define BPFOOM_CGROUP_DEPTH 8           /* names: a task's cgroup and up to 7 ancestors */
#define BPFOOM_CGROUP_TRUST_DEPTH 16    /* owners: up to 16 levels */
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
 * name's first 63 bytes, zero-padded. The same function as bpfoomctl's
 * cgroup_name_hash(), which fills the units maps.
 *
 * A global function, given the name's address as a plain number (read with
 * bpf_probe_read_kernel: a global function takes no kernel pointer on the
 * kernels this supports): the verifier checks it once,
 * alone. Inlined, its 64 rounds were checked again at every level of every
 * walk and on every path the levels before it took, most of the time a policy
 * naming units took to load.
 */
__noinline __u64 bpfoom_kernfs_name_hash(__u64 name_address)
{
	__u8 name[BPFOOM_CGROUP_NAME_LEN] = {};
	__u64 hash = BPFOOM_FNV_OFFSET;

	bpf_probe_read_kernel_str(name, sizeof(name), (const void *)name_address);
	for (int i = 0; i < BPFOOM_CGROUP_NAME_LEN; i++) {
		hash ^= name[i];
		hash *= BPFOOM_FNV_PRIME;
	}
	return hash;
}

static __always_inline struct kernfs_node *kernfs_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->parent))
		return kn->parent;
	return ((struct kernfs_node___6_15 *)kn)->__parent;
}

/*
 * Who may protect a task (docs/docsite/rst/policies.rst): a matcher that lowers a task's
 * chance to die counts only on an identity the task cannot take by itself.
 * A cgroup's name can be chosen by whoever may create it: a user's systemd
 * manager (user@UID.service) and every delegated subtree belong to that user,
 * who can name a cgroup "postgresql.service" there. So a named cgroup is
 * vouched for only when it and every one of its ancestors are owned by root
 * (kernfs keeps a cgroup's owner: a non-root mkdir, or systemd's chown of a
 * delegated subtree, set it). cgroup v2 has no rename: a name stays where
 * its creator put it.
 */
static __always_inline __u32 kernfs_owner(struct kernfs_node *kn)
{
	struct kernfs_iattrs *iattr = kn->iattr;

	return iattr ? iattr->ia_uid.val : 0;   /* no attributes: as root created it */
}

/* A units map: the unit and slice names a policy gives, as bpfoomctl resolved them on the host. */
#define BPFOOM_UNITS_MAX 64
#define BPFOOM_UNIT_MAP(name)						\
	struct {							\
		__uint(type, BPF_MAP_TYPE_HASH);			\
		__uint(max_entries, BPFOOM_UNITS_MAX);			\
		__type(key, __u64);	/* bpfoom_kernfs_name_hash() of the name */ \
		__type(value, struct bpfoom_unit);			\
	} name SEC(".maps")

/* What one walk up a task's cgroups found in a units map. */
struct bpfoom_units_found {
	bool vouched;                   /* the nearest named cgroup that root vouches for */
	bool unvouched;                 /* a named cgroup nobody vouches for (a user's own) */
	__s32 vouched_value;
	__s32 unvouched_value;          /* the highest value among those */
	__u64 vouched_id, unvouched_id;
	__u32 vouched_owner, unvouched_owner;
};

/*
 * One walk up from the task's cgroup: names are matched on its cgroup and up
 * to 7 ancestors, owners checked up to BPFOOM_CGROUP_TRUST_DEPTH levels
 * (deeper than that, nothing is vouched for). A named cgroup is vouched for
 * when no cgroup from it up to the root is a user's, so the matches of the
 * walk so far stay "pending" until a user's cgroup turns them all unvouched;
 * what is pending at the root is vouched.
 */
struct bpfoom_units_walk {
	struct bpfoom_units_found found;        /* .unvouched: what users' cgroups turned unvouched */
	struct bpfoom_units_found pending;      /* .vouched: the nearest match; .unvouched: the highest */
};

/* The pending matches vouch for nothing: the highest joins the unvouched ones. */
static __always_inline void units_unvouch(struct bpfoom_units_walk *walk)
{
	if (!walk->found.unvouched || walk->pending.unvouched_value > walk->found.unvouched_value) {
		walk->found.unvouched = true;
		walk->found.unvouched_value = walk->pending.unvouched_value;
		walk->found.unvouched_id = walk->pending.unvouched_id;
		walk->found.unvouched_owner = walk->pending.unvouched_owner;
	}
	walk->pending.vouched = walk->pending.unvouched = false;
}

/*
 * One level of the walk: the cgroup id, owner, and whether its name is in the
 * units map (and its value). A global function, for the verifier: the walk's
 * state lives in memory it cannot follow through the call, so it checks
 * these rules once, alone, instead of once per level for every combination
 * of what the levels below found (11,563 instructions for a policy with one
 * units map, inlined).
 */
__noinline int bpfoom_units_level(struct bpfoom_units_walk *walk, __u32 named, __s32 value, __u64 id, __u32 owner)
{
	if (!walk)
		return 0;
	if (named) {
		if (!walk->pending.vouched) {
			walk->pending.vouched = true;
			walk->pending.vouched_value = value;
			walk->pending.vouched_id = id;
			walk->pending.vouched_owner = owner;
		}
		if (!walk->pending.unvouched || value > walk->pending.unvouched_value) {
			walk->pending.unvouched = true;
			walk->pending.unvouched_value = value;
			walk->pending.unvouched_id = id;
			walk->pending.unvouched_owner = owner;
		}
	}
	if (owner && walk->pending.unvouched)   /* a user's cgroup: what is below it vouches for nothing */
		units_unvouch(walk);
	return 0;
}

static __always_inline void task_units(struct task_struct *task, void *units, struct bpfoom_units_found *found)
{
	struct kernfs_node *kn = task->cgroups->dfl_cgrp->kn;
	struct bpfoom_units_walk walk;

	__builtin_memset(&walk, 0, sizeof(walk));
	for (int depth = 0; depth < BPFOOM_CGROUP_TRUST_DEPTH && kn; depth++) {
		struct bpfoom_unit *unit = NULL;

		if (depth < BPFOOM_CGROUP_DEPTH) {
			__u64 name_address = 0, hash;

			bpf_probe_read_kernel(&name_address, sizeof(name_address), &kn->name);
			hash = bpfoom_kernfs_name_hash(name_address);
			unit = bpf_map_lookup_elem(units, &hash);
		}
		bpfoom_units_level(&walk, unit != NULL, unit ? unit->value : 0, kn->id, kernfs_owner(kn));
		kn = kernfs_parent(kn);
	}
	if (kn)         /* deeper than checked: vouched for by nobody, as under a user's cgroup */
		bpfoom_units_level(&walk, 0, 0, 0, 1);
	*found = walk.found;
	found->vouched = walk.pending.vouched;
	found->vouched_value = walk.pending.vouched_value;
	found->vouched_id = walk.pending.vouched_id;
	found->vouched_owner = walk.pending.vouched_owner;
}

static __always_inline void basis_cgroup(struct bpfoom_basis *basis, __u64 id, __u32 owner, bool vouched)
{
	basis->matched |= BPFOOM_MATCHED_CGROUP;
	basis->cgroup_id = id;
	basis->cgroup_owner = owner;
	basis->cgroup_vouched = vouched;
}

/* Is the task under a named cgroup that root vouches for? (may protect) */
static __always_inline bool task_under_vouched_unit(struct task_struct *task, void *units, struct bpfoom_basis *basis)
{
	struct bpfoom_units_found found;

	task_units(task, units, &found);
	if (found.vouched)
		basis_cgroup(basis, found.vouched_id, found.vouched_owner, true);
	return found.vouched;
}

/* Is the task under any named cgroup, whoever owns it? (may only make it die sooner) */
static __always_inline bool task_under_unit(struct task_struct *task, void *units, struct bpfoom_basis *basis)
{
	struct bpfoom_units_found found;

	task_units(task, units, &found);
	if (found.vouched)
		basis_cgroup(basis, found.vouched_id, found.vouched_owner, true);
	else if (found.unvouched)
		basis_cgroup(basis, found.unvouched_id, found.unvouched_owner, false);
	return found.vouched || found.unvouched;
}

/*
 * The value of the nearest named cgroup root vouches for (or fallback); a
 * named cgroup nobody vouches for may only raise it: a name a user gives its
 * own cgroup makes its tasks die sooner, never later.
 */
static __always_inline int task_unit_value(struct task_struct *task, void *units, int fallback,
					   struct bpfoom_basis *basis)
{
	struct bpfoom_units_found found;
	int value = fallback;

	task_units(task, units, &found);
	if (found.vouched) {
		value = found.vouched_value;
		basis_cgroup(basis, found.vouched_id, found.vouched_owner, true);
	}
	if (found.unvouched && found.unvouched_value > value) {
		value = found.unvouched_value;
		basis_cgroup(basis, found.unvouched_id, found.unvouched_owner, false);
	}
	return value;
}

/* The command name: chosen by the process (prctl(PR_SET_NAME)), so it may prefer a task, or narrow a protection. */
static __always_inline bool comm_in(const struct bpfoom_comm *comm, const volatile struct bpfoom_comm_pattern *patterns,
				    int count, struct bpfoom_basis *basis)
{
	for (int i = 0; i < count; i++)
		if (comm_matches(comm, &patterns[i])) {
			basis->matched |= BPFOOM_MATCHED_COMM;
			return true;
		}
	return false;
}

/* The task's uid: vouched for by the kernel (a process cannot take another uid without privilege). */
static __always_inline bool uid_in(struct task_struct *task, const volatile __u32 *uids, int count,
				   struct bpfoom_basis *basis)
{
	__u32 uid = task->cred->uid.val;

	for (int i = 0; i < count; i++)
		if (uids[i] == uid) {
			basis->matched |= BPFOOM_MATCHED_UID;
			return true;
		}
	return false;
}

#endif /* BPFOOM_MATCH_H */

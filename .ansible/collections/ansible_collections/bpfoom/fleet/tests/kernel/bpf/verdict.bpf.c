// SPDX-License-Identifier: GPL-2.0
/*
 * A hand-written test policy for the kernel acceptance tests: one verdict for
 * tasks whose comm is TARGET_COMM, another for every other task. Built with
 * -D options by the tests, so each case is a distinct, readable object:
 *   POLICY_NAME  the name set through set_oom_policy_name()
 *   TARGET_COMM  the comm that gets ON_TARGET
 *   ON_TARGET    verdict for that task        (enum bpfoom_verdict)
 *   ON_OTHER     verdict for every other task
 */
#include "bpfoom_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

static __always_inline bool comm_is(const char *comm, const char *wanted)
{
	for (int i = 0; i < BPFOOM_COMM_LEN; i++) {
		if (comm[i] != wanted[i])
			return false;
		if (!wanted[i])
			return true;
	}
	return true;
}

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(evaluate_task, struct task_struct *task, struct oom_control *oc)
{
	const char wanted[BPFOOM_COMM_LEN] = TARGET_COMM;
	char comm[BPFOOM_COMM_LEN];

	bpf_probe_read_kernel_str(comm, sizeof(comm), task->comm);
	return comm_is(comm, wanted) ? ON_TARGET : ON_OTHER;
}

SEC("fentry/bpf_set_policy_name")
int BPF_PROG(set_policy_name, struct oom_control *oc)
{
	char name[] = POLICY_NAME;

	set_oom_policy_name(oc, name, sizeof(name));
	return 0;
}

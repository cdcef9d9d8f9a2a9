"""Test-side loader run on lab hosts: libbpf1 through ctypes, nothing else.

  bpfload.py attach OBJECT PINDIR   load OBJECT, attach every program, pin the links
  bpfload.py hook                   exit 0 if the kernel has the BPF OOM hook

The links stay attached after this process exits because they are pinned;
removing PINDIR detaches them. Exit codes: 3 hook missing, 4 load or attach
failed. (The collection's own loader, bpfoomctl, is built on the same calls.)
"""

import ctypes
import errno
import os
import sys

HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")
BTF_KIND_FUNC = 12

libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
for name, restype, argtypes in (
    ("bpf_object__open_file", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
    ("bpf_object__load", ctypes.c_int, [ctypes.c_void_p]),
    ("bpf_object__next_program", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    ("bpf_program__name", ctypes.c_char_p, [ctypes.c_void_p]),
    ("bpf_program__attach", ctypes.c_void_p, [ctypes.c_void_p]),
    ("bpf_link__pin", ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    ("btf__load_vmlinux_btf", ctypes.c_void_p, []),
    ("btf__find_by_name_kind", ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint]),
):
    function = getattr(libbpf, name)
    function.restype, function.argtypes = restype, argtypes


def missing_hook_functions():
    btf = libbpf.btf__load_vmlinux_btf()
    if not btf:
        return list(HOOK_FUNCTIONS)
    return [name for name in HOOK_FUNCTIONS
            if libbpf.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC) < 0]


def fail(code, message):
    print(f"bpfload: {message}", file=sys.stderr)
    sys.exit(code)


def attach(object_path, pin_dir):
    missing = missing_hook_functions()
    if missing:
        fail(3, f"this kernel ({os.uname().release}) has no BPF OOM hook: {', '.join(missing)} "
                "not found in its BTF (/sys/kernel/btf/vmlinux); boot a kernel carrying the hook")
    obj = libbpf.bpf_object__open_file(object_path.encode(), None)
    if not obj:
        fail(4, f"cannot open {object_path}: {os.strerror(ctypes.get_errno())}")
    if libbpf.bpf_object__load(obj) != 0:
        fail(4, f"loading {object_path} failed: {os.strerror(ctypes.get_errno() or errno.EINVAL)} "
                "(libbpf's log above has the verifier's reason)")
    os.makedirs(pin_dir, exist_ok=True)
    prog = libbpf.bpf_object__next_program(obj, None)
    while prog:
        name = libbpf.bpf_program__name(prog).decode()
        link = libbpf.bpf_program__attach(prog)
        if not link:
            fail(4, f"attaching {name} failed: {os.strerror(ctypes.get_errno())}")
        if libbpf.bpf_link__pin(link, os.path.join(pin_dir, name).encode()) != 0:
            fail(4, f"pinning {name} in {pin_dir} failed: {os.strerror(ctypes.get_errno())}")
        print(f"attached {name}")
        prog = libbpf.bpf_object__next_program(obj, prog)


def main(argv):
    if argv[1:2] == ["hook"]:
        missing = missing_hook_functions()
        print("missing: " + ", ".join(missing) if missing else "present")
        return 3 if missing else 0
    if len(argv) == 4 and argv[1] == "attach":
        attach(argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Test-side loader run on lab hosts: libbpf1 through ctypes, nothing else.

  bpfload.py attach OBJECT PINDIR   load OBJECT, attach every program, pin the links
  bpfload.py hook                   exit 0 if the kernel has the BPF OOM hook
  bpfload.py links PINDIR           the pinned links as the kernel describes them (JSON)

The links stay attached after this process exits because they are pinned;
removing PINDIR detaches them. Exit codes: 3 hook missing, 4 load or attach
failed. (The collection's own loader, bpfoomctl, is built on the same calls.)
"""

import ctypes
import errno
import json
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
    ("btf__type_by_id", ctypes.POINTER(ctypes.c_uint32), [ctypes.c_void_p, ctypes.c_uint]),
    ("btf__name_by_offset", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_uint]),
    ("bpf_obj_get", ctypes.c_int, [ctypes.c_char_p]),
    ("bpf_obj_get_info_by_fd", ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]),
):
    function = getattr(libbpf, name)
    function.restype, function.argtypes = restype, argtypes


def missing_hook_functions():
    btf = libbpf.btf__load_vmlinux_btf()
    if not btf:
        return list(HOOK_FUNCTIONS)
    return [name for name in HOOK_FUNCTIONS
            if libbpf.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC) < 0]


# struct bpf_link_info: type, id, prog_id, then (8-byte aligned) the tracing
# member: attach_type, target_obj_id, target_btf_id.
ATTACH_TYPES = {24: "trace_fentry", 25: "trace_fexit", 26: "modify_return"}


def pinned_links(pin_dir):
    btf = libbpf.btf__load_vmlinux_btf()
    links = []
    for name in sorted(os.listdir(pin_dir)):
        fd = libbpf.bpf_obj_get(os.path.join(pin_dir, name).encode())
        if fd < 0:
            fail(4, f"cannot open pinned link {name}: {os.strerror(ctypes.get_errno())}")
        info = (ctypes.c_uint32 * 64)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if libbpf.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            fail(4, f"cannot read link info of {name}: {os.strerror(ctypes.get_errno())}")
        os.close(fd)
        target = libbpf.btf__name_by_offset(btf, libbpf.btf__type_by_id(btf, info[6])[0])
        links.append({"pin": name, "link_id": info[1], "prog_id": info[2],
                      "attach_type": ATTACH_TYPES.get(info[4], str(info[4])),
                      "target": target.decode() if target else None})
    return links


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
    if len(argv) == 3 and argv[1] == "links":
        print(json.dumps(pinned_links(argv[2])))
        return 0
    if len(argv) == 4 and argv[1] == "attach":
        attach(argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Test-side loader for the kernel acceptance tests, run on lab hosts.

  bpfload.py attach OBJECT PINDIR   load OBJECT, attach every program (a catalog policy's enforcing
                                    ones), pin the links
  bpfload.py hook                   exit 0 if the kernel has the BPF OOM hook
  bpfload.py links PINDIR           the pinned links as the kernel describes them (JSON)

The kernel tests load hand-written objects that are not catalog policies (no
manifest, their own program names), so they do not go through `bpfoomctl
apply`; the libbpf bindings and the kernel queries are the agent's own
(its package bpfoomctl/, copied beside this file, imported as a host does). Links stay attached after this
process exits because they are pinned; removing PINDIR detaches them.
Exit codes: 3 hook missing, 4 load or attach failed.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpfoomctl import kernel, libbpf  # noqa: E402  (the agent's package, copied beside this file)
from bpfoomctl.contract import HOOK_FUNCTIONS, MODES  # noqa: E402


def fail(code, message):
    print(f"bpfload: {message}", file=sys.stderr)
    sys.exit(code)


def attach(object_path, pin_dir):
    missing = kernel.missing_functions(HOOK_FUNCTIONS)
    if missing:
        fail(3, f"this kernel ({os.uname().release}) has no BPF OOM hook: {', '.join(missing)} "
                "not found in its BTF (/sys/kernel/btf/vmlinux); boot a kernel carrying the hook")
    lib = libbpf.lib()
    obj = lib.bpf_object__open_file(object_path.encode(), None)
    # A catalog policy also holds its shadow and explain programs: only its enforcing ones are attached.
    names, prog = [], lib.bpf_object__next_program(obj, None) if obj else None
    while prog:
        names.append(lib.bpf_program__name(prog).decode())
        prog = lib.bpf_object__next_program(obj, prog)
    enforce = MODES["enforce"]
    for name in names:
        if set(names) & set(enforce) and name not in enforce:
            lib.bpf_program__set_autoload(lib.bpf_object__find_program_by_name(obj, name.encode()), False)
    if not obj or lib.bpf_object__load(obj) != 0:
        fail(4, f"loading {object_path} failed: {libbpf.errno_text()}\n{libbpf.log_tail()}")
    os.makedirs(pin_dir, exist_ok=True)
    prog = lib.bpf_object__next_program(obj, None)
    while prog:
        name = lib.bpf_program__name(prog).decode()
        if set(names) & set(enforce) and name not in enforce:
            prog = lib.bpf_object__next_program(obj, prog)
            continue
        link = lib.bpf_program__attach(prog)
        if not link or lib.bpf_link__pin(link, os.path.join(pin_dir, name).encode()) != 0:
            fail(4, f"attaching or pinning {name} failed: {libbpf.errno_text()}")
        print(f"attached {name}")
        prog = lib.bpf_object__next_program(obj, prog)


def pinned_links(pin_dir):
    links = []
    for name in sorted(os.listdir(pin_dir)):
        fd = libbpf.lib().bpf_obj_get(os.path.join(pin_dir, name).encode())
        if fd < 0:
            fail(4, f"cannot open pinned link {name}: {libbpf.errno_text()}")
        links.append(dict(kernel.link_info(fd, kernel.vmlinux_btf()), pin=name))
        os.close(fd)
    return links


def main(argv):
    if argv[1:2] == ["hook"]:
        missing = kernel.missing_functions(HOOK_FUNCTIONS)
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

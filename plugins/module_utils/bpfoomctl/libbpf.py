# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libbpf1 through ctypes: the functions the agent calls, with their types, and libbpf's log."""

from __future__ import annotations

import ctypes
import errno
import os

from .contract import ExitCode, Failure

LIBBPF_MIN = (1, 0)


def _load():
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        raise Failure(ExitCode.NO_BPFFS_OR_LIBBPF,
                      "libbpf.so.1 not found: install libbpf1 (Debian), libbpf (RPM distributions)") from None
    vp, cp, u32, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int
    for name, restype, argtypes in (
        ("libbpf_major_version", u32, []), ("libbpf_minor_version", u32, []),
        ("libbpf_set_print", vp, [vp]),
        ("bpf_object__open_file", vp, [cp, vp]), ("bpf_object__load", i32, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__next_program", vp, [vp, vp]), ("bpf_program__name", cp, [vp]),
        ("bpf_object__find_program_by_name", vp, [vp, cp]),
        ("bpf_program__set_autoload", i32, [vp, ctypes.c_bool]),
        ("bpf_program__attach", vp, [vp]), ("bpf_link__pin", i32, [vp, cp]),
        ("bpf_program__attach_iter", vp, [vp, vp]), ("bpf_link__fd", i32, [vp]),
        ("bpf_link__destroy", i32, [vp]), ("bpf_iter_create", i32, [i32]),
        ("bpf_object__find_map_by_name", vp, [vp, cp]), ("bpf_map__fd", i32, [vp]),
        ("bpf_map__pin", i32, [vp, cp]), ("bpf_map__reuse_fd", i32, [vp, i32]),
        ("bpf_map_update_elem", i32, [i32, vp, vp, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", i32, [i32, vp, vp]),
        ("bpf_map_delete_elem", i32, [i32, vp]),
        ("bpf_map_get_next_key", i32, [i32, vp, vp]),
        ("bpf_obj_get", i32, [cp]), ("bpf_obj_pin", i32, [i32, cp]),
        ("bpf_obj_get_info_by_fd", i32, [i32, vp, ctypes.POINTER(u32)]),
        ("bpf_link_get_next_id", i32, [u32, ctypes.POINTER(u32)]),
        ("bpf_link_get_fd_by_id", i32, [u32]),
        ("bpf_prog_get_fd_by_id", i32, [u32]),
        ("bpf_map_get_fd_by_id", i32, [u32]),
        ("btf__load_vmlinux_btf", vp, []),
        ("btf__find_by_name_kind", i32, [vp, cp, ctypes.c_uint]),
        ("btf__type_by_id", ctypes.POINTER(u32), [vp, ctypes.c_uint]),
        ("btf__name_by_offset", cp, [vp, ctypes.c_uint]),
        ("ring_buffer__new", vp, [i32, vp, vp, vp]),
        ("ring_buffer__poll", i32, [vp, i32]),
        ("ring_buffer__free", None, [vp]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


_LIB = []
LOG = []                # what libbpf printed (warnings, the verifier's log) since the last clear_log()
# libbpf's print callback: (level, format, va_list); vsnprintf formats it.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIBC = ctypes.CDLL(None)
_LIBC.vasprintf.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_void_p]
_LIBC.free.argtypes = [ctypes.c_void_p]


@_PRINT_FN
def _collect_output(level, fmt, args):
    if level > 1:                   # LIBBPF_DEBUG: hundreds of lines per load, never shown
        return 0
    # vasprintf, not a fixed buffer: the verifier's log comes as one message, whose end (where it says why
    # it rejected the program) a 4 KiB buffer cut off.
    text = ctypes.c_void_p()
    length = _LIBC.vasprintf(ctypes.byref(text), fmt, args)
    if length >= 0:
        LOG.append(ctypes.string_at(text, length).decode(errors="replace"))
        _LIBC.free(text)
    return 0


def lib():
    """libbpf.so.1, loaded once per run; Failure(NO_BPFFS_OR_LIBBPF) when the host lacks it."""
    if not _LIB:
        loaded = _load()
        loaded.libbpf_set_print(ctypes.cast(_collect_output, ctypes.c_void_p))
        _LIB.append(loaded)
    return _LIB[0]


def version():
    """(major, minor) of libbpf.so.1, or None when the host lacks it."""
    try:
        return (lib().libbpf_major_version(), lib().libbpf_minor_version())
    except Failure:
        return None


def clear_log():
    del LOG[:]


def log_tail(lines=25):
    return "\n".join("".join(LOG).splitlines()[-lines:])


def errno_text():
    return os.strerror(ctypes.get_errno() or errno.EINVAL)


def info(fd, info_type):
    """bpf_obj_get_info_by_fd into a zeroed info_type (abi.LinkInfo, ProgInfo, MapInfo), or None."""
    value = info_type()
    length = ctypes.c_uint32(ctypes.sizeof(value))
    if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(value), ctypes.byref(length)) != 0:
        return None
    return value


def object_id(fd, info_type):
    value = info(fd, info_type)
    if value is None:
        raise Failure(ExitCode.FAILED, f"reading BPF object info failed: {errno_text()}")
    return value.id


def map_entries(fd, key_size, value_size):
    """{key bytes: value bytes} of a BPF hash map."""
    entries, key, next_key = {}, None, ctypes.create_string_buffer(key_size)
    value = ctypes.create_string_buffer(value_size)
    while lib().bpf_map_get_next_key(fd, key, next_key) == 0:
        key = ctypes.create_string_buffer(next_key.raw, key_size)
        if lib().bpf_map_lookup_elem(fd, key, value) == 0:
            entries[key.raw] = value.raw
    return entries


def sync_map(fd, wanted, key_size, value_size):
    """Make a hash map hold exactly `wanted`: new entries first, then the stale ones go. True if it changed."""
    held = map_entries(fd, key_size, value_size)
    for key, value in wanted.items():
        if held.get(key) != value and lib().bpf_map_update_elem(fd, key, value, 0) != 0:
            raise Failure(ExitCode.FAILED, f"cannot write a host input into its map: {errno_text()}")
    for key in set(held) - set(wanted):
        lib().bpf_map_delete_elem(fd, key)
    return held != wanted

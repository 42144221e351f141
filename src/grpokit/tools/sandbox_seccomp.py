"""A seccomp filter for the sandbox, as classic BPF bytes (struct sock_filter[]).

The filter refuses, with EPERM, the system calls that sandboxed Python never needs and
that reach beyond the call: creating sockets (so no connection to a Unix socket on the
host, even where no mount namespace hides it), new namespaces, mounts, ptrace and
reading other processes' memory, kernel keyrings, BPF, perf, userfaultfd, io_uring,
module loading, and other administrative calls. clone() with a namespace flag is
refused too; clone3() answers ENOSYS (its flags are in memory a filter cannot read),
and the C library falls back to clone(). Any other architecture than the one the
filter was built for is killed, and so are x32 system calls on x86_64.

Only x86_64 numbers are listed here; on other machines `program()` returns None and the
sandbox reports the seccomp layer as missing.
"""
from __future__ import annotations

import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
CLONE_NAMESPACES = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

# BPF opcodes: ld word abs, jeq/jge/jset immediate, ret immediate
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06

X86_64_REFUSED = {
    "socket": 41, "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "chroot": 161, "acct": 163,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179,
    "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
}
X86_64_CLONE, X86_64_CLONE3 = 56, 435


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    """One struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}, little-endian."""
    return struct.pack("<HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, or None where there is no table."""
    if (machine or platform.machine()) != "x86_64":
        return None
    refused = sorted(X86_64_REFUSED.values())
    # Layout: [0] ld arch; [1] jeq arch; [2] kill; [3] ld nr; [4] jge x32; [5..] jeq refused;
    # then clone3 -> ENOSYS, clone -> check flags, and the return instructions at the end.
    body: list[tuple[int, int, int | str, int | str]] = []  # (code, k, jt label|0, jf label|0)
    body.append((LD_ABS, 4, 0, 0))  # seccomp_data.arch
    body.append((JEQ, AUDIT_ARCH_X86_64, 1, 0))  # skip the kill when it matches
    body.append((RET, RET_KILL_PROCESS, 0, 0))
    body.append((LD_ABS, 0, 0, 0))  # seccomp_data.nr
    body.append((JGE, X32_SYSCALL_BIT, "kill", 0))
    for nr in refused:
        body.append((JEQ, nr, "eperm", 0))
    body.append((JEQ, X86_64_CLONE3, "enosys", 0))
    body.append((JEQ, X86_64_CLONE, 0, "allow"))
    body.append((LD_ABS, 16, 0, 0))  # low 32 bits of args[0]: clone's flags
    body.append((JSET, CLONE_NAMESPACES, "eperm", "allow"))
    labels = {"allow": RET_ALLOW, "eperm": RET_ERRNO | EPERM, "enosys": RET_ERRNO | ENOSYS, "kill": RET_KILL_PROCESS}
    where = {name: len(body) + i for i, name in enumerate(labels)}
    out = []
    for i, (code, k, jt, jf) in enumerate(body):
        jt = where[jt] - i - 1 if isinstance(jt, str) else jt
        jf = where[jf] - i - 1 if isinstance(jf, str) else jf
        out.append(insn(code, jt, jf, k))
    out += [insn(RET, 0, 0, value) for value in labels.values()]
    return b"".join(out)

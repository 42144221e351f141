"""Which isolation layers this machine gives the `python` tool, and the command that
starts one sandboxed call with them.

Layers (names used by `require` and in the start-up warning):

  mount       private mount namespace (bubblewrap): only the interpreter's directories,
              read-only, and a fresh /tmp (the scratch directory) are visible
  pid         PID namespace: the call sees and can signal only its own processes; when
              the call ends its init dies and the kernel kills every process in it
  net         network namespace: loopback only
  uid         a uid of its own per concurrent call (trainer is root): calls cannot signal
              each other, RLIMIT_NPROC counts only this call's processes
  memory      cgroup memory limit on the whole call (all processes, and /tmp)
  pids        cgroup limit on the number of processes/threads of the whole call
  disk        /tmp is a tmpfs of `scratch_mb` (all files together)
  landlock    Landlock: files beneath the interpreter read-only, scratch read-write, no
              TCP, no signals or abstract Unix sockets outside the call
  seccomp     seccomp filter: no sockets, namespaces, mounts, ptrace, keyrings, bpf, ...
  audit_hook  the Python audit hook (an extra layer, never the boundary)

Modes, tried in order at start-up (the first whose probe program runs is used):
  bwrap    bubblewrap with new mount, pid, net, ipc, uts (and cgroup) namespaces; as root
           bwrap needs no user namespace and the child drops to the call's uid; as
           another user it makes a user namespace (unprivileged user namespaces needed)
  unshare  `unshare -n` (root) or `unshare -r -n` (others): a network namespace only
  plain    a child process with rlimits, Landlock, seccomp and the audit hook only
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from grpokit.tools import sandbox_seccomp
from grpokit.tools.sandbox_cgroup import Cgroups
from grpokit.tools.sandbox_cgroup import probe as probe_cgroups

LAYERS = ("mount", "pid", "net", "uid", "memory", "pids", "disk", "landlock", "seccomp", "audit_hook")
SCRATCH_IN_SANDBOX = "/tmp"
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_LIBS = ("/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/lib", "/lib32", "/lib64", "/libx32")
READ_FILES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(444, None, ctypes.c_size_t(0), 1)  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0
    return max(0, int(abi))


@dataclass(frozen=True)
class Interpreter:
    """A Python binary and the directories it reads (asked from the binary itself)."""
    path: str
    read_roots: tuple[str, ...]  # stdlib + libraries: readable in every mode
    binds: tuple[str, ...]  # what a mount namespace must show (besides /usr and the system dirs)
    hide: tuple[str, ...]  # its site-packages: third-party code stays out of the sandbox

    @classmethod
    def inspect(cls, python: str) -> "Interpreter":
        script = ("import json, site, sys, sysconfig\np = sysconfig.get_paths()\n"
                  "print(json.dumps({'prefixes': [sys.prefix, sys.exec_prefix], 'std': [p['stdlib'], "
                  "p['platstdlib']], 'site': [p['purelib'], p['platlib']] + site.getsitepackages()}))")
        out = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin"})
        if out.returncode != 0:
            raise RuntimeError(f"python tool: cannot run the interpreter {python}: {out.stderr.strip()[-300:]}")
        info = json.loads(out.stdout)
        real = os.path.realpath
        prefixes = sorted({real(p) for p in info["prefixes"]})
        std = [real(p) for p in info["std"]]
        libs = [real(os.path.join(p, "lib")) for p in prefixes]
        roots = sorted({p for p in std + libs + [real(p) for p in SYSTEM_LIBS] if os.path.isdir(p)})
        binds = tuple(p for p in prefixes if not _under(p, "/usr") and os.path.isdir(p))
        hide = tuple(sorted({real(p) for p in info["site"] if os.path.isdir(p)}))
        return cls(real(python), tuple(roots), binds, hide)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class Machine:
    """What this machine offers, found once per process (`Machine.probe()`)."""
    root: bool
    bwrap: str | None
    unshare: str | None
    landlock: int
    seccomp: bytes | None
    cgroups: Cgroups | None
    notes: dict[str, str] = field(default_factory=dict)  # layer -> why it is missing
    bwrap_disable_userns: bool = False  # bwrap >= 0.8 can forbid user namespaces inside

    @classmethod
    def probe(cls) -> "Machine":
        root = os.geteuid() == 0
        notes = {}
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            notes["mount"] = notes["pid"] = notes["disk"] = "bubblewrap (bwrap) is not installed"
        unshare = shutil.which("unshare")
        abi = landlock_abi()
        if abi == 0:
            notes["landlock"] = "the kernel has no Landlock (or it is disabled)"
        prog = sandbox_seccomp.program()
        if prog is None:
            notes["seccomp"] = "no seccomp table for this architecture"
        cg, how = (probe_cgroups() if root else (None, "not root, so no cgroup can be made per call"))
        if cg is not None:
            atexit.register(cg.remove_bases)  # the per-process parent directories, empty by then
        else:
            notes["memory"] = notes["pids"] = how
        if cg is not None:
            if cg.memory_base is None:
                notes["memory"] = "no memory cgroup controller"
            if cg.pids_base is None:
                notes["pids"] = "no pids cgroup controller"
        if not root:
            notes["uid"] = "not root, so every call runs as the trainer's own uid"
        disable_userns = False
        if bwrap:
            try:
                out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
                disable_userns = "--disable-userns" in out.stdout + out.stderr
            except (OSError, subprocess.SubprocessError):
                pass
        return cls(root, bwrap, unshare, abi, prog, cg, notes, disable_userns)


@dataclass(frozen=True)
class Mode:
    name: str  # bwrap | unshare | plain
    layers: frozenset[str]  # the namespace/uid layers this mode gives


def modes(machine: Machine) -> list[Mode]:
    """Candidate modes, best first (each still has to pass its probe run)."""
    uid = {"uid"} if machine.root else set()
    out = []
    if machine.bwrap:
        out.append(Mode("bwrap", frozenset({"mount", "pid", "net", "disk"} | uid)))
    if machine.unshare:
        out.append(Mode("unshare", frozenset({"net"} | uid)))
    out.append(Mode("plain", frozenset(uid)))
    return out


def command(mode: Mode, machine: Machine, interp: Interpreter, *, scratch: str, scratch_bytes: int,
            child: list[str]) -> list[str]:
    """The argv that runs `child` (an interpreter command line) in `mode`."""
    if mode.name == "plain":
        return child
    if mode.name == "unshare":
        return [machine.unshare, "-n"] + ([] if machine.root else ["-r"]) + ["--"] + child
    args = [machine.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if not machine.root:  # bwrap makes a user namespace; none may be made inside it
        args += ["--unshare-user"] + (["--disable-userns"] if machine.bwrap_disable_userns else [])
    args += ["--ro-bind", "/usr", "/usr"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    made = set()
    for d in interp.binds:
        # bwrap copies a missing parent's mode from the host (/root is 0700): make them
        # 0755 so the call's uid can reach the interpreter; they hold nothing else.
        parts = d.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if parent not in made and not any(_under(parent, x) for x in ("/usr",) + SYSTEM_DIRS):
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", d, d]
    for d in interp.hide:
        args += ["--tmpfs", d]  # an empty directory over site-packages
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--perms", "1777", "--size", str(scratch_bytes), "--tmpfs", scratch, "--chdir", scratch, "--"]
    return args + child



"""`python`: run a snippet of Python in a sandbox whose boundary is the operating system.

Each call runs a fresh interpreter (`python -I -S -u -B`: standard library only) under
every isolation layer this machine offers (sandbox_layers lists them and says how each
is found): a bubblewrap sandbox with private mount, PID, network, IPC and UTS
namespaces in which only the interpreter's directories (read-only) and a fresh,
size-limited /tmp (the scratch directory, also the working directory) exist; a uid of
its own per concurrent call when the trainer is root; a cgroup limiting the call's
total memory and process count; Landlock and seccomp; rlimits on CPU seconds, address
space, file size, processes and open files; and, as an extra layer only, an audit hook
that refuses file access outside scratch, processes, signals, sockets and ctypes.
Every process of the call is killed when it ends (the PID namespace's init dies; the
cgroup is emptied; the call's uid is swept), and a wall-clock timeout bounds it.

Layers the machine cannot give are named once, in a logged warning, when the first
python tool is built; `require=[...]` (or `require="all"`) refuses to build the tool
when one of the named layers is missing. docs/sandbox.md says what each layer
guarantees and what holds without it.

Outcomes: `ok` and `error` (the code raised; the traceback is the output) are normal
results; `timeout`, `cpu_limit`, `memory_limit`, `output_limit`, `blocked`, `killed` and
`sandbox_error` (the sandbox could not be set up) raise ToolError, so the runtime counts
them as failures; the model sees the status and the output either way.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from grpokit.tools.base import ToolError, tool
from grpokit.tools import sandbox_child
from grpokit.tools.sandbox_cgroup import EXIT_JOIN_FAILED, CallCgroup, join_command
from grpokit.tools.sandbox_layers import (LAYERS, READ_FILES, SCRATCH_IN_SANDBOX, Interpreter, Machine, Mode,
                                          command, modes)
from grpokit.tools.sandbox_uids import UidPool

log = logging.getLogger(__name__)

EXIT_MEMORY, EXIT_BLOCKED, EXIT_SETUP = sandbox_child.EXIT_MEMORY, sandbox_child.EXIT_BLOCKED, sandbox_child.EXIT_SETUP
CHILD_SOURCE = Path(sandbox_child.__file__).read_text()
PROBE_CODE = "import math, json\nprint('ok')"
CGROUP_OVERHEAD_TASKS = 3  # the starting shell/bwrap, bwrap's init inside the namespace, the interpreter


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | blocked | killed | sandbox_error
    output: str  # stdout and stderr interleaved, truncated
    returncode: int | None
    seconds: float


@dataclass(frozen=True)
class Setup:
    """How calls run on this machine with one interpreter (found once per process)."""
    mode: Mode
    interp: Interpreter
    layers: frozenset[str]  # everything active, audit_hook aside


_MACHINE: list[Machine] = []
_SETUPS: dict[tuple, Setup] = {}
MODES = ("auto", "bwrap", "unshare", "plain")
OPTIONAL = ("landlock", "seccomp", "memory", "pids")  # layers `without` may switch off
_WARNED: set[frozenset[str]] = set()
_LOCK = threading.Lock()
_UIDS = UidPool()


def machine() -> Machine:
    with _LOCK:
        if not _MACHINE:
            _MACHINE.append(Machine.probe())
        return _MACHINE[0]


def _task_count(uid: int) -> int:
    """Threads owned by `uid` now (RLIMIT_NPROC counts all of them)."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            n += int(fields.get("Threads", "1").strip() or 1)
    return n


def _system_python() -> str | None:
    for cand in ("/usr/bin/python3", shutil.which("python3")):
        if cand and os.path.isfile(cand) and os.path.realpath(cand) != os.path.realpath(sys.executable):
            return cand
    return None


@tool("python", doc="run Python code in an OS-level sandbox (namespaces, cgroup, Landlock, seccomp; no network)")
class PythonSandbox:
    """Run code in a sandboxed subprocess; kwargs: timeout (wall s), cpu_seconds, memory_mb
    (the call's total memory, and each process's address space), scratch_mb (all files in
    /tmp together), max_file_bytes, max_processes (the call's processes and threads),
    max_output_chars, python (interpreter), guard (audit hook on/off), require (layers
    that must be present, or "all"), mode (auto | bwrap | unshare | plain: auto takes the
    strongest that works), without (landlock, seccomp, memory, pids: not used even where
    available), name (the tag), max_query_chars, scratch_root."""

    description = "run a Python snippet (standard library only) and return what it prints"

    def __init__(self, *, timeout: float = 5.0, cpu_seconds: int = 3, memory_mb: int = 256, scratch_mb: int = 16,
                 max_file_bytes: int = 1_000_000, max_processes: int = 16, max_output_chars: int = 2000,
                 python: str | None = None, guard: bool = True, require: list[str] | str | None = None,
                 mode: str = "auto", without: list[str] | None = None, name: str = "python",
                 max_query_chars: int = 4000, scratch_root: str | None = None):
        if timeout <= 0 or cpu_seconds < 1 or memory_mb < 32 or max_file_bytes < 1 or max_processes < 1 \
                or scratch_mb < 1:
            raise ValueError("python tool: timeout > 0, cpu_seconds >= 1, memory_mb >= 32, scratch_mb >= 1, "
                             "max_file_bytes >= 1 and max_processes >= 1 are required")
        if mode not in MODES:
            raise ValueError(f"python tool: mode={mode!r}: expected one of {', '.join(MODES)}")
        off = list(without or [])
        if any(x not in OPTIONAL for x in off):
            raise ValueError(f"python tool: without={off!r}: only {', '.join(OPTIONAL)} can be switched off "
                             "(guard=False switches the audit hook off)")
        required = list(LAYERS) if require == "all" else list(require or [])
        unknown = [r for r in required if r not in LAYERS]
        if unknown or isinstance(require, str) and require != "all":
            raise ValueError(f"python tool: require={require!r}: expected \"all\" or a list of {', '.join(LAYERS)}")
        self.name, self.max_query_chars = name, max_query_chars
        self.timeout, self.cpu_seconds, self.memory_mb, self.scratch_mb = timeout, cpu_seconds, memory_mb, scratch_mb
        self.max_file_bytes, self.max_processes, self.max_output_chars = max_file_bytes, max_processes, max_output_chars
        self.guard, self.scratch_root, self.without = guard, scratch_root, off
        self.machine = machine()
        self.setup = self._find_setup(python, mode, frozenset(off))
        # the uids calls run as, when each gets its own (where to look for leftovers)
        self.call_uids = range(_UIDS.base, _UIDS.base + _UIDS.size) if "uid" in self.setup.layers else range(0)
        self.layers = self.setup.layers | ({"audit_hook"} if guard else set())
        missing = [x for x in LAYERS if x not in self.layers]
        self.missing = missing
        self.isolation = (f"{self.setup.mode.name}: " + ", ".join(x for x in LAYERS if x in self.layers)
                          + (f"; missing: {', '.join(missing)}" if missing else ""))
        lacking = [x for x in required if x in missing]
        if lacking:
            raise RuntimeError("python tool: required sandbox layers are missing on this machine: "
                               + "; ".join(f"{x} ({self._why(x)})" for x in lacking))
        key = frozenset(x for x in missing if x != "audit_hook")
        with _LOCK:
            if key and key not in _WARNED:
                _WARNED.add(key)
                log.warning("python tool: sandbox layers not active: %s. See docs/sandbox.md for "
                            "what holds without them.", "; ".join(f"{x} ({self._why(x)})" for x in LAYERS if x in key))

    def _why(self, layer: str) -> str:
        if layer == "audit_hook":
            return "guard=False"
        if layer in self.without:
            return "switched off with without=[...]"
        return self.machine.notes.get(layer) or f"the {self.setup.mode.name} mode does not give it"

    # -- which mode this machine allows (probed once per interpreter) --------------------
    def _find_setup(self, python: str | None, mode_name: str, off: frozenset[str]) -> Setup:
        key = (python or "", mode_name, off)
        with _LOCK:
            if key in _SETUPS:
                return _SETUPS[key]
        m = self.machine
        extra = {"landlock"} if m.landlock else set()
        extra |= {"seccomp"} if m.seccomp else set()
        if m.cgroups is not None:
            extra |= {x for x, b in (("memory", m.cgroups.memory_base), ("pids", m.cgroups.pids_base)) if b}
        extra -= off
        pythons = [python] if python else [os.path.realpath(sys.executable)] + (
            [p] if (p := _system_python()) else [])
        last = ""
        for mode in modes(m):
            if mode_name != "auto" and mode.name != mode_name:
                continue
            for py in pythons if "uid" in mode.layers else pythons[:1]:
                try:
                    interp = Interpreter.inspect(py)
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                    last = str(e)
                    continue
                setup = Setup(mode, interp, frozenset(mode.layers | extra))
                res = self._run(PROBE_CODE, setup=setup)
                if res.status == "ok" and res.output.strip() == "ok":
                    with _LOCK:
                        _SETUPS.setdefault(key, setup)
                        return _SETUPS[key]
                last = f"{mode.name} with {py}: {res.status}: {res.output.strip()[-300:]}"
        raise RuntimeError(f"python tool: no way to start a sandboxed interpreter; last attempt: {last}")

    def describe(self) -> str:
        return (f"{self.isolation}; interpreter {self.setup.interp.path}; limits: wall {self.timeout:g}s, CPU "
                f"{self.cpu_seconds}s, memory {self.memory_mb} MB, scratch {self.scratch_mb} MB, file "
                f"{self.max_file_bytes} bytes, {self.max_processes} processes; "
                f"audit hook {'on' if self.guard else 'off'}")

    def run(self, code: str) -> SandboxResult:
        return self._run(code, setup=self.setup)

    def _run(self, code: str, *, setup: Setup) -> SandboxResult:
        start = time.perf_counter()
        mode, interp = setup.mode, setup.interp
        in_bwrap = mode.name == "bwrap"
        uid = fd = None
        cgroup: CallCgroup | None = None
        scratch = None if in_bwrap else tempfile.mkdtemp(prefix="grpokit-sandbox-", dir=self.scratch_root)
        outdir = tempfile.mkdtemp(prefix="grpokit-sandbox-out-", dir=self.scratch_root)
        try:
            if "uid" in mode.layers:
                uid, fd = _UIDS.acquire()
                if scratch:
                    os.chown(scratch, uid, uid)
            if {"memory", "pids"} & setup.layers and self.machine.cgroups is not None:
                cgroup = self.machine.cgroups.create(
                    f"call-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}",
                    self.memory_mb << 20 if "memory" in setup.layers else None,
                    self.max_processes + CGROUP_OVERHEAD_TASKS if "pids" in setup.layers else None)
            if uid is not None:
                nproc = self.max_processes
            else:
                nproc = self.max_processes + _task_count(os.geteuid())
            inside = SCRATCH_IN_SANDBOX if in_bwrap else scratch
            cfg = {"cpu": self.cpu_seconds, "mem_mb": self.memory_mb, "fsize": self.max_file_bytes, "nproc": nproc,
                   "scratch": inside, "guard": self.guard, "uid": uid, "gid": uid,
                   "landlock": self.machine.landlock if "landlock" in setup.layers else 0,
                   "seccomp": self.machine.seccomp.hex() if "seccomp" in setup.layers else "",
                   "read_roots": list(interp.read_roots), "read_files": list(READ_FILES)}
            child = [interp.path, "-I", "-S", "-u", "-B", "-c", CHILD_SOURCE, repr(cfg)]
            cmd = command(mode, self.machine, interp, scratch=inside, scratch_bytes=self.scratch_mb << 20, child=child)
            cmd = join_command(cgroup.procs_files if cgroup else [], cmd)
            env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": inside, "TMPDIR": inside}
            out_path = os.path.join(outdir, "output")
            timed_out = False
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                        cwd=scratch or "/", env=env, start_new_session=True, close_fds=True)
                try:
                    proc.stdin.write(code.encode("utf-8", "replace"))
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
                try:
                    proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                _kill_group(proc.pid)
                proc.wait()
            oom = cgroup is not None and cgroup.oom_killed()
            self._end_call(cgroup, uid, setup)
            cgroup = None
            size = os.path.getsize(out_path)
            with open(out_path, "rb") as f:
                raw = f.read(4 * self.max_output_chars + 4096)
            text = _truncate(raw.decode("utf-8", "replace"), self.max_output_chars)
            status = _status(proc.returncode, timed_out, size >= self.max_file_bytes, oom)
            return SandboxResult(status, text, proc.returncode, time.perf_counter() - start)
        finally:
            if cgroup is not None:
                cgroup.kill_and_remove()
            if fd is not None:
                _UIDS.release(fd)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(outdir, ignore_errors=True)

    @staticmethod
    def _end_call(cgroup: CallCgroup | None, uid: int | None, setup: Setup) -> None:
        """Kill whatever of the call is still alive (a PID namespace needs nothing more:
        its processes died with its init)."""
        if cgroup is not None and not cgroup.kill_and_remove():
            log.warning("python tool: a process of a finished call outlived SIGKILL for 5 s")
        if uid is not None and cgroup is None and "pid" not in setup.layers:
            # kill(-1) as the call's uid reaches every process of that uid, setsid() or not
            subprocess.run(["/bin/kill", "-9", "-1"], user=uid, group=uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def __call__(self, query: str) -> str:
        res = self.run(query)
        if res.status in ("ok", "error"):
            return res.output if res.output.strip() else "(no output)"
        why = {"timeout": f"timed out after {self.timeout:g} s", "cpu_limit": f"CPU limit ({self.cpu_seconds} s)",
               "memory_limit": f"memory limit ({self.memory_mb} MB)",
               "output_limit": f"output/file size limit ({self.max_file_bytes} bytes)",
               "blocked": "blocked by the sandbox", "killed": f"killed (exit status {res.returncode})",
               "sandbox_error": "the sandbox could not be set up"}[res.status]
        raise ToolError(f"{why}\n{res.output}".rstrip())


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(returncode: int | None, timed_out: bool, output_full: bool, oom: bool = False) -> str:
    if timed_out:
        return "timeout"
    if returncode in (EXIT_SETUP, EXIT_JOIN_FAILED):
        return "sandbox_error"
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "cpu_limit"
    if output_full:
        return "output_limit"
    if returncode == EXIT_MEMORY or oom:
        return "memory_limit"
    if returncode == EXIT_BLOCKED:
        return "blocked"
    if returncode == 0:
        return "ok"
    if returncode == 1:
        return "error"
    return "killed"


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]}\n...[{len(text) - limit} characters cut]...\n{text[-tail:]}"

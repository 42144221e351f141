"""`python`: run a snippet of Python in a separate, limited process and return its output.

What confines the code, from the operating system up (`PythonSandbox.isolation` says
which of the optional layers this machine gave us):

1. A separate interpreter process (`python -I -S -u -B`: isolated mode, no site
   packages, so only the standard library), in a new session so a timeout kills its
   whole process group, with a minimal environment and no inherited file descriptors.
2. Resource limits set by the child on itself before any user code runs (soft = hard,
   so the code cannot raise them): RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space,
   so a memory bomb gets MemoryError), RLIMIT_FSIZE (bytes per file written, which also
   caps the output, since stdout and stderr go to a file), RLIMIT_NPROC (processes of
   the user), RLIMIT_NOFILE, RLIMIT_CORE = 0. Plus a wall-clock timeout in the parent.
3. Optional, when available: a fresh network namespace (`unshare -n`; as a non-root
   user `unshare -r -n`), which has no interfaces but loopback, so there is no network
   at the OS level; and, when the trainer runs as root, a drop to uid/gid `nobody`
   (`setpriv`), because root ignores RLIMIT_NPROC and can read every file.
4. A scratch directory, fresh per call and deleted afterwards, as the working directory.
5. An audit hook (PEP 578) installed before the user's code, which refuses: opening or
   listing files outside the scratch directory (reading the standard library is
   allowed, or imports would fail), writing or deleting outside it, sockets, fork,
   exec, spawn, subprocess and os.system, sending signals, and importing ctypes /
   _posixsubprocess. A refused operation raises PermissionError("sandbox: ...") and
   the call is reported as `blocked`.

Honest limits: the audit hook is a guard against mistakes and ordinary code, not a
security boundary (CPython does not promise that hooks cannot be bypassed by
determined code). Where neither a network namespace nor a uid drop is available, the
hook is the only thing between the code and the network or world-readable files. For
untrusted code from the internet, run the trainer itself in a container or VM.

Outcomes: `ok` and `error` (the code raised; the traceback is the output) are normal
results; `timeout`, `cpu_limit`, `memory_limit`, `output_limit`, `blocked` and
`killed` raise ToolError, so the runtime counts them as failures; the model sees the
status and the output either way.
"""
from __future__ import annotations

import json
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

EXIT_MEMORY, EXIT_BLOCKED = 3, 5
NOBODY = 65534

# Runs in the child as `python -I -S -u -B -c BOOTSTRAP CONFIG_JSON`; the code comes on stdin.
BOOTSTRAP = r'''
import sys, os, json, resource, traceback, threading
cfg = json.loads(sys.argv[1])
code = sys.stdin.read()
sys.stdin.close()
MB = 1024 * 1024
for name, soft, hard in (("RLIMIT_CPU", cfg["cpu"], cfg["cpu"] + 1), ("RLIMIT_AS", cfg["mem_mb"] * MB, None),
                         ("RLIMIT_FSIZE", cfg["fsize"], None), ("RLIMIT_NPROC", cfg["nproc"], None),
                         ("RLIMIT_NOFILE", 64, None), ("RLIMIT_CORE", 0, None)):
    # SIGXCPU at the soft CPU limit, SIGKILL one second later; the others: soft = hard
    resource.setrlimit(getattr(resource, name), (soft, soft if hard is None else hard))
scratch = os.path.realpath(cfg["scratch"])
os.chdir(scratch)
read_roots = [os.path.realpath(p) for p in sys.path if p and os.path.isabs(p)]
read_files = {"/dev/null", "/dev/urandom", "/dev/zero"}
blocked_events = {
    "os.system": "running a shell command", "os.exec": "exec", "os.posix_spawn": "spawning a process",
    "os.spawn": "spawning a process", "os.fork": "fork", "os.forkpty": "fork", "subprocess.Popen": "subprocess",
    "os.kill": "sending a signal", "os.killpg": "sending a signal", "signal.pthread_kill": "sending a signal",
    "socket.__new__": "network access", "socket.connect": "network access", "socket.bind": "network access",
    "socket.getaddrinfo": "network access", "socket.gethostbyname": "network access",
    "socket.sendto": "network access", "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes",
    "ctypes.cdata": "ctypes", "os.putenv": "changing the environment", "os.unsetenv": "changing the environment",
    "sys.setprofile": "profiling hooks", "sys.settrace": "tracing hooks",
}
blocked_imports = {"ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "multiprocessing", "_multiprocessing"}
write_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
                "os.truncate", "os.utime", "os.chflags", "os.lchown", "os.mkfifo", "os.mknod", "shutil.rmtree",
                "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.move", "shutil.chown"}
read_events = {"os.listdir", "os.scandir", "os.chdir", "glob.glob", "os.walk", "os.fwalk"}
state = threading.local()
violations = []

def _inside(path, roots):
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

def _resolve(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.realpath(os.path.join(scratch, path if path else "."))

def _deny(what):
    violations.append(what)
    try:
        sys.__stderr__.write(f"[sandbox] blocked: {what}\n")
    except Exception:
        pass
    raise PermissionError(f"sandbox: {what} is not allowed")

def _hook(event, args):
    if getattr(state, "busy", False):
        return
    state.busy = True
    try:
        if event in blocked_events:
            _deny(blocked_events[event])
        elif event == "import" and args[0].split(".")[0] in blocked_imports:
            _deny(f"importing {args[0]}")
        elif event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            if isinstance(path, int):
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            real = _resolve(path)
            if _inside(real, [scratch]):
                return
            if not writing and (_inside(real, read_roots) or real in read_files):
                return
            _deny(f"{'writing' if writing else 'reading'} {real} (outside the scratch directory)")
        elif event in write_events or event in read_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
                    real = _resolve(os.fspath(a))
                    if not _inside(real, [scratch]) and not (event in read_events and _inside(real, read_roots)):
                        _deny(f"{event} on {real} (outside the scratch directory)")
    finally:
        state.busy = False

if cfg["guard"]:
    sys.addaudithook(_hook)
status = 0
try:
    exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except MemoryError:
    violations.append("memory")
    sys.__stderr__.write("MemoryError: the memory limit was reached\n")
    os._exit(3)
except BaseException:
    try:
        lines = traceback.format_exc().splitlines()
        sys.__stderr__.write("\n".join(l for l in lines if "File \"<string>\"" not in l) + "\n")
    except BaseException:
        pass
    status = 1
try:
    sys.stdout.flush()
except BaseException:
    pass
os._exit(5 if violations else status)
'''


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | blocked | killed
    output: str  # stdout and stderr interleaved, truncated
    returncode: int | None
    seconds: float


_RUNNERS: dict[str, tuple[list[str], str, bool]] = {}
_RUNNER_LOCK = threading.Lock()


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


def _candidates(python: str | None) -> list[tuple[list[str], str, bool, str]]:
    """(prefix, interpreter, drops uid, description) in order of preference."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    setpriv = shutil.which("setpriv")
    netns = ([unshare, "-n"] if root else [unshare, "-r", "-n"]) if unshare else None
    drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if root and setpriv else None
    pythons = [python] if python else [sys.executable] + ([p] if (p := _system_python()) else [])
    out = []
    for py in pythons:
        if netns and drop:
            out.append((netns + drop, py, True, "network namespace (unshare -n), uid nobody (setpriv)"))
    for py in pythons[:1]:
        if netns:
            out.append((netns, py, False, f"network namespace ({' '.join(['unshare'] + netns[1:])})"))
        out.append(([], py, False, "no network namespace, same uid (audit hook only)"))
    return out


@tool("python", doc="run Python code in a sandboxed subprocess (time, memory, file, process limits; no network)")
class PythonSandbox:
    """Run code in a limited subprocess; kwargs: timeout (wall s), cpu_seconds, memory_mb,
    max_file_bytes, max_processes, max_output_chars, python (interpreter), guard (audit
    hook on/off), name (the tag), max_query_chars, scratch_root."""

    description = "run a Python snippet (standard library only) and return what it prints"

    def __init__(self, *, timeout: float = 5.0, cpu_seconds: int = 3, memory_mb: int = 256,
                 max_file_bytes: int = 1_000_000, max_processes: int = 16, max_output_chars: int = 2000,
                 python: str | None = None, guard: bool = True, name: str = "python",
                 max_query_chars: int = 4000, scratch_root: str | None = None):
        if timeout <= 0 or cpu_seconds < 1 or memory_mb < 32 or max_file_bytes < 1 or max_processes < 1:
            raise ValueError("python tool: timeout > 0, cpu_seconds >= 1, memory_mb >= 32, max_file_bytes >= 1 "
                             "and max_processes >= 1 are required")
        self.name, self.max_query_chars = name, max_query_chars
        self.timeout, self.cpu_seconds, self.memory_mb = timeout, cpu_seconds, memory_mb
        self.max_file_bytes, self.max_processes, self.max_output_chars = max_file_bytes, max_processes, max_output_chars
        self.guard, self.scratch_root = guard, scratch_root
        self._prefix, self._python, self._drops_uid, self.isolation = self._runner(python)

    # -- which isolation this machine allows (probed once per interpreter) ---------------
    def _runner(self, python: str | None) -> tuple[list[str], str, bool, str]:
        key = python or ""
        with _RUNNER_LOCK:
            if key not in _RUNNERS:
                for prefix, py, drops, desc in _candidates(python):
                    self._prefix, self._python, self._drops_uid = prefix, py, drops
                    res = self._run("import math, json\nprint('ok')", probe=True)
                    if res.status == "ok" and res.output.strip() == "ok":
                        _RUNNERS[key] = (prefix, py, drops, desc)
                        break
                else:
                    raise RuntimeError(f"python tool: no way to start a sandboxed interpreter ({sys.executable}); "
                                       f"last attempt said: {res.output[-300:]!r}")
            return _RUNNERS[key]

    def describe(self) -> str:
        return (f"{self.isolation}; interpreter {self._python}; limits: wall {self.timeout:g}s, CPU "
                f"{self.cpu_seconds}s, memory {self.memory_mb} MB, file {self.max_file_bytes} bytes, "
                f"{self.max_processes} processes; audit hook {'on' if self.guard else 'off'}")

    def run(self, code: str) -> SandboxResult:
        return self._run(code)

    def _run(self, code: str, probe: bool = False) -> SandboxResult:
        start = time.perf_counter()
        scratch = tempfile.mkdtemp(prefix="grpokit-sandbox-", dir=self.scratch_root)
        outdir = tempfile.mkdtemp(prefix="grpokit-sandbox-out-", dir=self.scratch_root)
        try:
            if self._drops_uid:
                os.chown(scratch, NOBODY, NOBODY)
            nproc = self.max_processes + (0 if self._drops_uid else _task_count(os.geteuid()))
            cfg = {"cpu": self.cpu_seconds, "mem_mb": self.memory_mb, "fsize": self.max_file_bytes,
                   "nproc": nproc, "scratch": scratch, "guard": self.guard}
            cmd = self._prefix + [self._python, "-I", "-S", "-u", "-B", "-c", BOOTSTRAP, json.dumps(cfg)]
            env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": scratch}
            out_path = os.path.join(outdir, "output")
            timed_out = False
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=scratch,
                                        env=env, start_new_session=True, close_fds=True)
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
            size = os.path.getsize(out_path)
            with open(out_path, "rb") as f:
                raw = f.read(4 * self.max_output_chars + 4096)
            text = _truncate(raw.decode("utf-8", "replace"), self.max_output_chars)
            status = _status(proc.returncode, timed_out, size >= self.max_file_bytes)
            return SandboxResult(status, text, proc.returncode, time.perf_counter() - start)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(outdir, ignore_errors=True)

    def __call__(self, query: str) -> str:
        res = self.run(query)
        if res.status in ("ok", "error"):
            return res.output if res.output.strip() else "(no output)"
        why = {"timeout": f"timed out after {self.timeout:g} s", "cpu_limit": f"CPU limit ({self.cpu_seconds} s)",
               "memory_limit": f"memory limit ({self.memory_mb} MB)",
               "output_limit": f"output/file size limit ({self.max_file_bytes} bytes)",
               "blocked": "blocked by the sandbox", "killed": f"killed (exit status {res.returncode})"}[res.status]
        raise ToolError(f"{why}\n{res.output}".rstrip())


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(returncode: int | None, timed_out: bool, output_full: bool) -> str:
    if timed_out:
        return "timeout"
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "cpu_limit"
    if output_full:
        return "output_limit"
    if returncode == EXIT_MEMORY:
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

"""A control group per sandboxed call: the call's TOTAL memory and process count, and a
way to kill every process of the call at once.

cgroup v2: a child of this process's own cgroup, when that cgroup already delegates the
`memory` and `pids` controllers (cgroup.subtree_control); memory.max, memory.swap.max=0,
pids.max; cgroup.kill ends everything. cgroup v1 (hybrid hosts): a child in the `memory`
and the `pids` hierarchies, under this process's own cgroup there; memory.limit_in_bytes
(and memsw, so no swap), pids.max. Either needs write access to the cgroup files, which
in practice means root (or a delegated subtree).

The process that starts the sandbox writes its own pid into the call's cgroup.procs
before it execs anything (see `join_command`), so every later process of the call is
born inside the limits; nothing can fork before it is moved.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

# A shell prelude: write our pid to each cgroup.procs given before "--", then exec the rest.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
EXIT_JOIN_FAILED = 125


def join_command(procs_files: list[str], command: list[str]) -> list[str]:
    if not procs_files:
        return command
    return ["/bin/sh", "-c", JOIN_SCRIPT, "sh", *procs_files, "--", *command]


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _own_cgroups() -> dict[str, str]:
    """{controller or '' for v2: path} from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else [""]):
                out[c] = path
    return out


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of the cgroup file systems."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _src, opts = (right.split() + ["", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((left.split()[4], fstype, opts))
    return out


@dataclass
class CallCgroup:
    """The cgroup(s) of one call."""
    dirs: list[str]
    version: int
    memory_dir: str | None = None

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        if self.memory_dir is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.memory_dir, name)) as f:
                fields = dict(line.split() for line in f if len(line.split()) == 2)
        except OSError:
            return False
        return int(fields.get("oom_kill", "0")) > 0

    def pids(self) -> set[int]:
        out = set()
        for p in self.procs_files:
            try:
                with open(p) as f:
                    out.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def kill_and_remove(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the call, then remove the cgroup(s); False when a
        process or a directory outlived `timeout`."""
        if self.version == 2 and os.path.exists(os.path.join(self.dirs[0], "cgroup.kill")):
            try:
                _write(os.path.join(self.dirs[0], "cgroup.kill"), "1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        pending = list(self.dirs)
        while pending:
            for pid in self.pids():  # a fork between reading and killing is caught on the next pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            for d in list(pending):
                try:
                    os.rmdir(d)
                    pending.remove(d)
                except FileNotFoundError:
                    pending.remove(d)
                except OSError:
                    pass  # still has (dying) processes
            if pending:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)
        return True


@dataclass
class Cgroups:
    """Where per-call cgroups are made on this machine (found by `probe`)."""
    version: int
    memory_base: str | None
    pids_base: str | None

    @property
    def description(self) -> str:
        what = [n for n, b in (("memory", self.memory_base), ("pids", self.pids_base)) if b]
        return f"cgroup v{self.version} ({' + '.join(what)})"

    def create(self, name: str, memory_bytes: int | None, max_pids: int | None) -> CallCgroup:
        """A cgroup for one call; a limit given as None is not set (and, on v1, that
        hierarchy is not used)."""
        dirs, memory_dir = [], None
        bases = [(self.memory_base if memory_bytes else None, "memory"), (self.pids_base if max_pids else None, "pids")]
        if self.version == 2:
            bases = [(self.memory_base, "both")]
        try:
            for base, what in bases:
                if base is None:
                    continue
                d = os.path.join(base, name)
                os.mkdir(d)
                dirs.append(d)
                if what in ("memory", "both") and memory_bytes:
                    memory_dir = d
                    if self.version == 2:
                        _write(os.path.join(d, "memory.max"), str(memory_bytes))
                        _write(os.path.join(d, "memory.swap.max"), "0")
                    else:
                        _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
                        if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                            _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                if what in ("pids", "both") and max_pids:
                    _write(os.path.join(d, "pids.max"), str(max_pids))
        except OSError:
            CallCgroup(dirs, self.version).kill_and_remove(timeout=1.0)
            raise
        return CallCgroup(dirs, self.version, memory_dir)

    def remove_bases(self) -> None:
        for b in {self.memory_base, self.pids_base} - {None}:
            try:
                os.rmdir(b)
            except OSError:
                pass


def probe(tag: str | None = None) -> tuple[Cgroups | None, str]:
    """(Cgroups, how) or (None, why not). Creates this process's base directories."""
    tag = tag or f"grpokit-sandbox-{os.getpid()}"
    try:
        own, mounts = _own_cgroups(), _mounts()
    except OSError as e:
        return None, f"cannot read /proc/self/cgroup ({e})"
    # cgroup v2 with both controllers delegated to our cgroup
    for mnt, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            d = mnt + own[""]
            try:
                with open(os.path.join(d, "cgroup.subtree_control")) as f:
                    enabled = set(f.read().split())
            except OSError:
                continue
            if {"memory", "pids"} <= enabled:
                cg = Cgroups(2, os.path.join(d, tag), os.path.join(d, tag))
                why = _try(cg)
                if why is None:
                    return cg, cg.description
    # cgroup v1 memory and pids hierarchies
    bases: dict[str, str] = {}
    for ctrl in ("memory", "pids"):
        for mnt, fstype, opts in mounts:
            if fstype == "cgroup" and ctrl in opts.split(",") and ctrl in own:
                bases[ctrl] = os.path.join(mnt + own[ctrl], tag)
    if bases:
        cg = Cgroups(1, bases.get("memory"), bases.get("pids"))
        why = _try(cg)
        if why is None:
            return cg, cg.description
        return None, f"cgroup v1 is not writable here ({why})"
    return None, "no cgroup with the memory and pids controllers is writable by this process"


def _try(cg: Cgroups) -> str | None:
    """None when a test cgroup can be made and limited under cg's bases."""
    try:
        for b in {cg.memory_base, cg.pids_base} - {None}:
            os.makedirs(b, exist_ok=True)
            if cg.version == 2:
                _write(os.path.join(b, "cgroup.subtree_control"), "+memory +pids")
        cg.create("probe", 64 << 20, 8).kill_and_remove(timeout=1.0)
    except OSError as e:
        cg.remove_bases()
        return f"{type(e).__name__}: {e}"
    return None

"""The sandbox's layers one by one: the seccomp program, the uid pool, cgroups, the
start-up report of missing layers, `require`, concurrency and the non-root path."""
from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grpokit.tools import build_tool
from grpokit.tools import sandbox as sandbox_mod
from grpokit.tools.sandbox_layers import LAYERS
from grpokit.tools.sandbox_seccomp import program
from grpokit.tools.sandbox_uids import UidPool

ROOT = os.geteuid() == 0


def tool(**kw):
    return build_tool({"name": "python", "kwargs": {"timeout": 4, **kw}})


# -- seccomp ----------------------------------------------------------------------------

def test_seccomp_program_layout():
    prog = program("x86_64")
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert insns[1] == (0x15, 1, 0, 0xC000003E)  # x86_64: skip the kill
    assert insns[2] == (0x06, 0, 0, 0x80000000)  # anything else: kill the process
    assert insns[3] == (0x20, 0, 0, 0)  # load the syscall number
    # the four returns at the end: allow, EPERM, ENOSYS, kill
    assert [i[3] for i in insns[-4:]] == [0x7FFF0000, 0x00050001, 0x00050026, 0x80000000]
    # socket (41) jumps to the EPERM return
    k = next(n for n, i in enumerate(insns) if i[0] == 0x15 and i[3] == 41)
    assert k + 1 + insns[k][1] == len(insns) - 3
    assert program("aarch64") is None


@pytest.mark.skipif(program() is None, reason="no seccomp table for this architecture")
def test_seccomp_refuses_sockets_and_namespaces_with_the_hook_off():
    t = tool(guard=False)
    if "seccomp" not in t.layers:
        pytest.skip(f"seccomp not active: {t.isolation}")
    code = ("import os, socket\ntry:\n    socket.socket(socket.AF_UNIX)\nexcept OSError as e:\n    print('socket', e.errno)\n"
            "try:\n    os.unshare(os.CLONE_NEWUSER)\nexcept (OSError, AttributeError) as e:\n"
            "    print('unshare', getattr(e, 'errno', 'n/a'))\n")
    out = t(code)
    assert "socket 1" in out  # EPERM
    assert "unshare 1" in out or "unshare n/a" in out


# -- uid pool ---------------------------------------------------------------------------

def test_uid_pool_hands_out_distinct_uids_and_reuses_released_ones(tmp_path):
    pool = UidPool(base=5_000_000, size=3, lock_dir=str(tmp_path / "uids"))
    held = [pool.acquire() for _ in range(3)]
    assert sorted(u for u, _ in held) == [5_000_000, 5_000_001, 5_000_002]
    with pytest.raises(RuntimeError, match="all 3 uids"):
        pool.acquire()
    pool.release(held[1][1])
    uid, fd = pool.acquire()
    assert uid == 5_000_001
    pool.release(fd)


def test_uid_pool_is_shared_between_processes(tmp_path):
    """A uid held by another process (another data-parallel rank) is skipped."""
    lock_dir = tmp_path / "uids"
    pool = UidPool(base=5_000_000, size=2, lock_dir=str(lock_dir))
    uid, fd = pool.acquire()
    code = (f"from grpokit.tools.sandbox_uids import UidPool\n"
            f"p = UidPool(base=5_000_000, size=2, lock_dir={str(lock_dir)!r})\nprint(p.acquire()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(sandbox_mod.__file__).parents[2])})
    assert out.stdout.strip() == str(5_000_001 if uid == 5_000_000 else 5_000_000), out.stderr
    pool.release(fd)


def test_uid_pool_refuses_a_lock_directory_others_can_write(tmp_path):
    d = tmp_path / "uids"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(PermissionError, match="mode 0700"):
        UidPool(lock_dir=str(d)).acquire()


# -- what the tool reports and refuses ----------------------------------------------------

def test_missing_layers_are_named_once_at_start_up(caplog):
    # a combination of missing layers no other test builds: its warning has not been given yet
    with caplog.at_level(logging.WARNING, logger="grpokit.tools.sandbox"):
        t = tool(mode="plain", without=["landlock", "pids"])
        tool(mode="plain", without=["landlock", "pids"])
    warnings = [r.getMessage() for r in caplog.records if "not active" in r.getMessage()]
    assert len(warnings) == 1
    assert "mount (" in warnings[0] and "landlock (switched off" in warnings[0]
    assert "docs/sandbox.md" in warnings[0]
    assert {"mount", "pid", "disk", "landlock", "pids"} <= set(t.missing)
    assert t.run("print(6*7)").output.strip() == "42"  # it still runs, with what it has


def test_require_refuses_to_build_the_tool_without_a_layer():
    with pytest.raises(RuntimeError, match=r"required sandbox layers are missing.*mount \("):
        tool(mode="plain", require=["mount", "net"])
    with pytest.raises(ValueError, match="expected \"all\" or a list of mount, pid"):
        tool(require=["mountt"])
    with pytest.raises(ValueError, match="only landlock, seccomp, memory, pids can be switched off"):
        tool(without=["uid"])
    with pytest.raises(ValueError, match="mode='docker'"):
        tool(mode="docker")


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed")
def test_every_layer_is_active_where_bwrap_and_root_are():
    t = tool()
    if not ROOT:
        pytest.skip("as a non-root user uid, memory and pids cannot be active")
    if t.setup.mode.name != "bwrap":
        pytest.skip(f"bwrap does not start here: {t.isolation}")
    expected = set(LAYERS) - {x for x in ("landlock", "seccomp", "memory", "pids") if x in t.machine.notes}
    assert t.layers == expected, t.isolation
    assert tool(require="all").layers == set(LAYERS) or t.machine.notes


def test_the_sandbox_sees_a_private_tmp_and_no_host_paths():
    t = tool(guard=False, without=["landlock"])  # Landlock alone would refuse listing /
    if "mount" not in t.layers:
        pytest.skip(f"no mount namespace here: {t.isolation}")
    out = t("import os\nprint(sorted(os.listdir('/')))\nprint(os.getcwd(), os.listdir('.'))")
    top = eval(out.splitlines()[0])
    assert not {"work", "home", "etc", "var", "opt", "srv", "mnt"} & set(top), top
    assert out.splitlines()[1] == "/tmp []"


# -- concurrency ------------------------------------------------------------------------

def test_concurrent_calls_run_as_distinct_uids_and_all_finish():
    t = tool(timeout=10)
    code = "import os, time\ntime.sleep(0.5)\nprint(os.getuid(), os.getpid())"
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(t, [code] * 8))
    uids = [int(o.split()[0]) for o in outs]
    if "uid" in t.layers:
        assert len(set(uids)) == 8, uids  # each call its own uid
        assert all(u in t.call_uids for u in uids)
    if "pid" in t.layers:
        assert all(int(o.split()[1]) <= 3 for o in outs), outs  # each call its own PID namespace


# -- a trainer that is not root -----------------------------------------------------------

@pytest.mark.skipif(not ROOT or not shutil.which("setpriv"), reason="needs root to start a non-root trainer")
def test_non_root_trainer_gets_a_working_sandbox(tmp_path):
    """As an ordinary user: bwrap with a user namespace where the kernel allows it, else
    the weaker modes; the tool starts, names what is missing, and contains a file read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("NONROOT-SECRET")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    src = str(Path(sandbox_mod.__file__).parents[2])
    # the system interpreter (an ordinary user cannot reach a root-owned venv) without
    # grpokit's heavy dependencies: only grpokit.types (torch) is stubbed, the tools are real
    code = ("import logging, sys, types\nlogging.basicConfig(level=logging.WARNING)\n"
            f"pkg = types.ModuleType('grpokit'); pkg.__path__ = [{src + '/grpokit'!r}]; sys.modules['grpokit'] = pkg\n"
            "stub = types.ModuleType('grpokit.types'); stub.Tool = object; sys.modules['grpokit.types'] = stub\n"
            "from grpokit.tools import build_tool\n"
            "t = build_tool({'name': 'python', 'kwargs': {'python': '/usr/bin/python3', 'timeout': 5}})\n"
            "print('LAYERS', sorted(t.layers))\n"
            f"r = t.run({'print(open(%r).read())' % str(secret)!r})\nprint('STATUS', r.status, r.output[-200:])\n"
            "r = t.run('import os; print(os.getuid())')\nprint('UID', r.output.strip())\n")
    uid = 1_790_000_000
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3",
                          "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "HOME": "/nonexistent",
                              "TMPDIR": str(tmp_path)})
    if "No module named" in out.stderr:
        pytest.skip(f"the system python cannot import grpokit's dependencies: {out.stderr.strip()[-200:]}")
    assert "LAYERS" in out.stdout, out.stderr
    layers = eval(out.stdout.split("LAYERS", 1)[1].splitlines()[0])
    assert "uid" not in layers and "memory" not in layers  # not root: no uid pool, no cgroup
    assert "not active" in out.stderr and "uid (not root" in out.stderr
    assert "NONROOT-SECRET" not in out.stdout
    if "net" in layers and "mount" not in layers:
        # without bwrap the net layer is `unshare -r -n`: the child is root of its own user
        # namespace only, mapped to the caller's uid outside it
        assert "UID 0" in out.stdout, out.stdout
    else:
        assert f"UID {uid}" in out.stdout
    if shutil.which("bwrap"):
        assert "mount" in layers and "pid" in layers, out.stdout  # user namespaces work on this kernel


# -- cgroup -----------------------------------------------------------------------------

def test_call_cgroup_limits_and_kills_everything_in_it():
    from grpokit.tools.sandbox import machine
    from grpokit.tools.sandbox_cgroup import join_command

    cgroups = machine().cgroups
    if cgroups is None:
        pytest.skip(f"no writable cgroup here: {machine().notes.get('memory')}")
    cg = cgroups.create(f"test-{os.getpid()}", 64 << 20, 8)
    for d in cg.dirs:
        limit = "memory.limit_in_bytes" if d == cg.memory_dir and cg.version == 1 else \
            "memory.max" if d == cg.memory_dir else "pids.max"
        assert Path(d, limit).read_text().strip() == str(64 << 20 if "memory" in limit else 8)
    # a shell that forks a setsid'd sleeper and exits: both born inside the cgroup
    proc = subprocess.Popen(join_command(cg.procs_files, ["/bin/sh", "-c", "setsid sleep 30 & sleep 30"]),
                            start_new_session=True)
    for _ in range(200):
        if len(cg.pids()) >= 2:
            break
        __import__("time").sleep(0.01)
    pids = cg.pids()
    assert len(pids) >= 2
    assert cg.kill_and_remove(timeout=5.0)
    proc.wait(timeout=5)
    assert not [p for p in pids if _alive(p)]
    assert not any(os.path.exists(d) for d in cg.dirs)


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie is dead
    except OSError:
        return False

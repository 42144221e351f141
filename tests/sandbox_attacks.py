"""Adversarial programs for the `python` tool, each with the check that it was contained.

Shared by tests/test_sandbox_adversarial.py and benchmarks/sandbox_escapes.py (which runs
them against any version of the tool and prints the table in docs/sandbox.md).

Every program is bounded: loops have a count, children sleep a fixed time and exit, and
the memory held is at most a few hundred MB per process. Programs marked `hook_off`
first try the one-line switch that turned the old audit hook off (a re-entrancy flag on
the bootstrap's module state), then attack what the OS alone must stop.

A check gets (SandboxResult, Env) and returns True when the attack was contained.
"""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TOKEN = "ANSWER-7f3a-SECRET"  # what the training answers file holds
PROJECT_FILE = Path(__file__).resolve().parents[1] / "pyproject.toml"
PROJECT_TOKEN = 'name = "grpokit"'

HOOK_OFF = ("import sys\ntry:\n    sys.modules['__main__'].state.busy = True  # the old hook returned early on this\n"
            "except Exception:\n    pass\n")


@dataclass
class Env:
    """Host-side things the attacks aim at, made fresh for each attack."""
    root: Path  # world-readable/writable directory outside any scratch
    secret: Path  # a world-readable file: "training data with answers"
    outside: Path  # a world-writable directory the code must not write to
    sock: Path  # a world-writable Unix socket with a listener on the host
    tag: str  # unique per attack: names of files the code tries to create
    received: list[bytes] = field(default_factory=list)
    _server: socket.socket | None = None

    @classmethod
    def make(cls) -> "Env":
        root = Path(tempfile.mkdtemp(prefix="grpokit-attack-"))
        os.chmod(root, 0o755)
        secret = root / "answers.jsonl"
        secret.write_text(f'{{"question": "6*7", "answer": "{TOKEN}"}}\n')
        os.chmod(secret, 0o644)
        outside = root / "outside"
        outside.mkdir()
        os.chmod(outside, 0o777)
        env = cls(root, secret, outside, root / "host.sock", uuid.uuid4().hex[:10])
        env._listen()
        return env

    def _listen(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.sock))
        os.chmod(self.sock, 0o777)
        srv.listen(4)
        srv.settimeout(0.2)
        self._server = srv

        def serve() -> None:
            while self._server is not None:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(100) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.close()
        for p in sorted(self.root.rglob("*"), key=lambda x: -len(x.parts)):
            try:
                p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
            except OSError:
                pass
        try:
            self.root.rmdir()
        except OSError:
            pass

    def fill(self, code: str) -> str:
        return (code.replace("SECRET", repr(str(self.secret))).replace("OUTSIDE", repr(str(self.outside)))
                .replace("SOCK", repr(str(self.sock))).replace("TAG", repr(self.tag))
                .replace("PROJECT", repr(str(PROJECT_FILE))))


def pool_processes(uids: range) -> list[int]:
    """Pids of live processes whose uid is in `uids` (the sandbox's per-call uids)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid in uids and (d / "status").read_text().find("State:\tZ") < 0:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@dataclass
class Attack:
    name: str
    code: str
    contained: Callable  # (result, env) -> bool
    kwargs: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # layers that must hold it with the audit hook off
    hook_alone: bool = False  # the audit hook by itself must hold it too
    hook_stops: bool = True  # with the hook on, it holds even where the `needs` layers are missing


def no_secret(res, env) -> bool:
    return TOKEN not in res.output


def no_file(pattern: str) -> Callable:
    def check(res, env) -> bool:
        return not list(env.outside.glob(pattern.replace("TAG", env.tag)))
    return check


ATTACKS: list[Attack] = [
    # -- the audit hook switched off or walked around -------------------------------------
    Attack("hook off via the bootstrap's module state, then read the answers",
           HOOK_OFF + "print(open(SECRET).read())", no_secret, needs=("mount",), hook_alone=True),
    Attack("find the hook through gc and blank its closure",
           "import gc\nfor f in gc.get_objects():\n    if type(f).__name__ == 'function' and f.__name__ in "
           "('hook', '_hook'):\n        for c in f.__closure__ or ():\n            try:\n"
           "                c.cell_contents = None\n            except Exception:\n                pass\n"
           "print(open(SECRET).read())", no_secret, needs=("mount",), hook_alone=True),
    Attack("monkey-patch the path resolver the hook uses",
           "import os, posixpath\nposixpath.realpath = lambda p, *a, **k: os.getcwd()\n"
           "os.path.realpath = posixpath.realpath\nprint(open(SECRET).read())", no_secret, needs=("mount",),
           hook_alone=True),
    Attack("patch the builtins the hook calls, then write outside scratch",
           "import builtins\nbuiltins.any = lambda *a: False\nbuiltins.isinstance = lambda *a: False\n"
           "builtins.type = lambda *a: str\nopen(OUTSIDE + '/pwned-' + TAG, 'w').write('x')",
           no_file("pwned-TAG"), needs=("mount",), hook_alone=True),
    Attack("chdir out of scratch, read by relative path",
           "import os\nos.chdir(os.path.dirname(SECRET))\nprint(open(os.path.basename(SECRET)).read())",
           no_secret, needs=("mount",), hook_alone=True),
    Attack("symlink out of scratch, read through it",
           "import os\nos.symlink(os.path.dirname(SECRET), 'link')\n"
           "print(open('link/' + os.path.basename(SECRET)).read())", no_secret, needs=("mount",), hook_alone=True),
    Attack("symlink out of scratch, write through it",
           "import os\nos.symlink(OUTSIDE, 'link')\nopen('link/pwned-' + TAG, 'w').write('x')",
           no_file("pwned-TAG"), needs=("mount",), hook_alone=True),
    Attack("sqlite3 creates a database outside scratch",
           "import sqlite3\nsqlite3.connect(OUTSIDE + '/pwned-' + TAG + '.db').execute('create table t(x)')",
           no_file("pwned-TAG*"), needs=("mount",), hook_alone=True),
    Attack("dbm creates a file outside scratch",
           "import dbm\nd = dbm.open(OUTSIDE + '/pwned-' + TAG, 'c')\nd['k'] = 'v'\nd.close()",
           no_file("pwned-TAG*"), needs=("mount",), hook_alone=True),
    Attack("_posixshmem.shm_open creates a file in the host's /dev/shm",
           "import os, _posixshmem\nos.close(_posixshmem.shm_open('/pwned-' + TAG, os.O_CREAT | os.O_RDWR, 0o666))",
           lambda res, env: not os.path.exists(f"/dev/shm/pwned-{env.tag}"), needs=("mount",), hook_alone=True),
    Attack("a subinterpreter (no audit hook) reads the answers",
           "import _xxsubinterpreters as s\ni = s.create()\ns.run_string(i, 'print(open(%r).read())' % SECRET)",
           no_secret, needs=("mount",), hook_alone=True),
    # -- with the hook off: what uid nobody + a network namespace did not stop ------------
    Attack("hook off: read the project's files", HOOK_OFF + "print(open(PROJECT).read())",
           lambda res, env: PROJECT_TOKEN not in res.output, needs=("mount",)),
    Attack("hook off: write the system's temporary directory",
           HOOK_OFF + "open('/tmp/grpokit-pwned-' + TAG, 'w').write('x')",
           lambda res, env: not os.path.exists(f"/tmp/grpokit-pwned-{env.tag}"), needs=("mount",)),
    Attack("hook off: run a shell",
           HOOK_OFF + "import os\nos.system('echo SHELL-$((6*7))')", lambda res, env: "SHELL-42" not in res.output,
           needs=("landlock",)),
    Attack("hook off: connect to a world-writable Unix socket on the host",
           HOOK_OFF + "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(SOCK)\ns.sendall(b'PWNED')\n"
           "s.close()", lambda res, env: (time.sleep(0.3), not env.received)[1], needs=("mount",)),
    Attack("hook off: a setsid() process outlives the call",
           HOOK_OFF + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
           "        time.sleep(4)\n    os._exit(0)\ntime.sleep(0.2)\nprint('daemon started')",
           "leftover", kwargs={"max_processes": 8}, needs=("pid",)),
    Attack("hook off: kill another rollout's concurrent call",
           HOOK_OFF + "import os\nn = 0\nfor p in range(1, 5000):  # every pid, no need to list /proc\n"
           "    if p != os.getpid():\n        try:\n            os.kill(p, 9)\n            n += 1\n"
           "        except OSError:\n            pass\ntry:\n    os.kill(-1, 9)\nexcept OSError:\n    pass\n"
           "print('signalled', n)", "neighbour", needs=("pid",)),
    Attack("hook off: hold 1.4 GB across forked children (6 x 230 MB)",
           HOOK_OFF + "import os, time\nr, w = os.pipe()\nfor i in range(6):\n    if os.fork() == 0:\n"
           "        try:\n            x = b'x' * (230 << 20)\n            os.write(w, b'1')\n            time.sleep(6)\n"
           "        except BaseException:\n            os.write(w, b'E')\n            os._exit(1)\n        os._exit(0)\n"
           "os.close(w)\nos.set_blocking(r, False)\ngot = b''\n"
           "for _ in range(50):\n    time.sleep(0.1)\n    try:\n        got += os.read(r, 100)\n"
           "    except BlockingIOError:\n        pass\n"
           # Count the children that held their 230 MB through the whole sleep: the OOM killer may
           # kill an older child to let a newer one allocate, so '1's alone overstate what was held
           # at once. The survivors' sleeps overlap, so they held their memory at the same time.
           "held = 0\nwhile True:\n    try:\n        _, status = os.wait()\n    except ChildProcessError:\n        break\n"
           "    held += os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0\n"
           "print('HELD_MB', 230 * held, 'FAILED', got.count(b'E'))",
           lambda res, env: _held(res.output) <= 512, kwargs={"memory_mb": 512, "timeout": 20, "max_processes": 16},
           needs=("memory",)),
    Attack("hook off: write 200 MB into scratch in files under the per-file limit",
           HOOK_OFF + "n = 0\ntry:\n    for i in range(200):\n        open('f%d' % i, 'wb').write(b'x' * 999_000)\n"
           "        n += 1\nexcept OSError:\n    pass\nprint('WROTE_MB', n)",
           lambda res, env: _held(res.output, "WROTE_MB") <= 16, kwargs={"scratch_mb": 16, "timeout": 10},
           needs=("disk",), hook_stops=False),
    # -- plain attacks --------------------------------------------------------------------
    Attack("infinite loop", "while True:\n    pass", lambda res, env: res.status == "cpu_limit",
           kwargs={"cpu_seconds": 1, "timeout": 60}),  # one CPU second can take long on a loaded machine
    Attack("sleep past the wall clock", "import time\ntime.sleep(30)", lambda res, env: res.status == "timeout",
           kwargs={"timeout": 1.5}),
    Attack("memory bomb", "x = []\nfor i in range(100):\n    x.append(b'x' * (10 << 20))\nprint('SURVIVED')",
           lambda res, env: "SURVIVED" not in res.output, kwargs={"memory_mb": 128}),
    Attack("fork bomb (bounded)", "import os, time\nn = 0\ntry:\n    for i in range(300):\n"
           "        if os.fork() == 0:\n            time.sleep(1)\n            os._exit(0)\n        n += 1\n"
           "except OSError:\n    pass\nprint('FORKED', n)",
           lambda res, env: _held(res.output, "FORKED") <= 16, kwargs={"max_processes": 16}, needs=("pids",)),
    Attack("network connection", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n"
           "print('CONNECTED')", lambda res, env: "CONNECTED" not in res.output, needs=("net",)),
    Attack("read /etc/passwd", "print(open('/etc/passwd').read())",
           lambda res, env: "root:x:0" not in res.output, needs=("mount",)),
    Attack("huge print", "print('x' * 10**7)", lambda res, env: res.status == "output_limit"),
]


def _held(output: str, key: str = "HELD_MB") -> int:
    for line in output.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def run_attack(make_tool: Callable[[dict], object], attack: Attack, env: Env) -> tuple[bool, str]:
    """(contained, detail). make_tool(kwargs) -> a python tool object with .run(code)."""
    tool = make_tool(attack.kwargs)
    code = env.fill(attack.code)
    if attack.contained == "neighbour":
        victim = {}

        def run_victim() -> None:
            victim["res"] = tool.run("import time\ntime.sleep(2.0)\nprint('A-SURVIVED')")

        t = threading.Thread(target=run_victim)
        t.start()
        time.sleep(0.7)  # the victim is running
        res = tool.run(code)
        t.join()
        ok = "A-SURVIVED" in victim["res"].output
        return ok, f"victim: {victim['res'].status}; attacker: {res.output.strip()[-80:]}"
    if attack.contained == "leftover":
        uids = getattr(tool, "call_uids", range(65534, 65535))  # the old tool ran every call as nobody
        before = set(pool_processes(uids))
        res = tool.run(code)
        time.sleep(0.5)
        left = set(pool_processes(uids)) - before
        return not left, f"{len(left)} process(es) left after the call"
    res = tool.run(code)
    ok = bool(attack.contained(res, env))
    return ok, f"{res.status}: {res.output.strip()[-100:]!r}"

"""The `python` tool against hostile programs (tests/sandbox_attacks.py has them all).

Three configurations:
- default (every layer this machine has, audit hook on): every attack is contained;
- OS layers only (audit hook off): an attack is contained wherever the layers it
  `needs` are active; the test skips, naming the missing layer, elsewhere;
- audit hook alone (no namespaces, Landlock, seccomp): the file-system attacks the hook
  is meant to stop are still stopped (its state cannot be reached or switched off).
On a machine without bubblewrap or root the first and third still run, so the
missing-layer path is exercised there.
"""
from __future__ import annotations

import os

import pytest

from grpokit.tools import build_tool
from sandbox_attacks import ATTACKS, Env, run_attack

BASE = {"timeout": 4, "cpu_seconds": 2, "memory_mb": 256, "max_output_chars": 600}


def make(extra: dict):
    def make_tool(kwargs: dict):
        return build_tool({"name": "python", "kwargs": {**BASE, **extra, **kwargs}})
    return make_tool


@pytest.fixture
def env():
    e = Env.make()
    yield e
    e.close()


# .ci/run sets this where it installed bubblewrap: there the namespace layers must be
# present, so a broken sandbox fails CI instead of skipping quietly.
STRICT = os.environ.get("GRPOKIT_SANDBOX_STRICT") == "1"


def _skip_unless(tool, needs) -> None:
    missing = [x for x in needs if x not in tool.layers]
    if STRICT and {"mount", "pid", "net"} & set(missing):
        pytest.fail(f"GRPOKIT_SANDBOX_STRICT=1 but layers are missing: {', '.join(missing)} ({tool.isolation})")
    if missing:
        pytest.skip(f"layers missing on this machine: {', '.join(missing)} ({tool.isolation})")


def _only_where_safe(tool, attack) -> None:
    # these attacks signal every process they can see, or need per-call uids to find leftovers
    if attack.contained == "neighbour" and not ({"pid", "uid"} & tool.layers):
        pytest.skip("killing a neighbour is only tried where a PID namespace or a uid per call isolates it")
    if attack.contained == "leftover" and "uid" not in tool.layers:
        pytest.skip("leftover processes are found by the call's uid (the trainer must be root)")


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_contained_with_every_layer(attack, env):
    tool = make({})(attack.kwargs)
    if not attack.hook_stops:
        _skip_unless(tool, attack.needs)
    _only_where_safe(tool, attack)
    ok, detail = run_attack(make({}), attack, env)
    assert ok, detail


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.needs], ids=[a.name for a in ATTACKS if a.needs])
def test_contained_by_the_os_layers_alone(attack, env):
    tool = make({"guard": False})(attack.kwargs)
    _skip_unless(tool, attack.needs)
    _only_where_safe(tool, attack)
    ok, detail = run_attack(make({"guard": False}), attack, env)
    assert ok, detail


HOOK_ONLY = {"mode": "plain", "without": ["landlock", "seccomp"]}


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.hook_alone], ids=[a.name for a in ATTACKS if a.hook_alone])
def test_contained_by_the_audit_hook_alone(attack, env):
    ok, detail = run_attack(make(HOOK_ONLY), attack, env)
    assert ok, detail


def test_secret_really_is_readable_without_a_sandbox(env):
    """The attacks aim at something real: the host can read the secret, the socket listens."""
    import socket
    import time

    assert "ANSWER" in env.secret.read_text() and os.stat(env.secret).st_mode & 0o004
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(env.sock))
    s.sendall(b"hello")
    s.close()
    time.sleep(0.3)
    assert env.received == [b"hello"]

"""grpokit.engine.allocator: the `grpokit` command re-executes itself once under its malloc settings."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from grpokit.engine import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_env_sets_tunables_once_and_respects_the_user():
    env = allocator.tuned_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": allocator.TUNABLES, "GRPOKIT_ALLOCATOR_SET": "1"}
    assert allocator.tuned_env(env) is None  # the re-executed process does not loop
    assert allocator.tuned_env({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}) is None
    assert allocator.tuned_env({"GRPOKIT_ALLOCATOR": "system"}) is None


def test_tuned_env_is_none_off_glibc(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.tuned_env({}) is None


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_reexecuted_process_runs_under_the_tunables():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GRPOKIT_ALLOCATOR_SET",
                                                           "GRPOKIT_ALLOCATOR")}
    probe = "import os; print(os.environ.get('GLIBC_TUNABLES'))"
    code = f"from grpokit.engine.allocator import reexec_tuned; reexec_tuned(['-c', {probe!r}]); print('not re-executed')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == allocator.TUNABLES
    env["GRPOKIT_ALLOCATOR"] = "system"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "not re-executed"


def test_console_script_reexecutes_with_its_own_arguments(monkeypatch):
    from grpokit import cli

    seen = []
    monkeypatch.setattr(allocator, "reexec_tuned", lambda cmd: seen.append(cmd))
    monkeypatch.setattr(cli.sys, "argv", ["/venv/bin/grpokit", "--version"])
    assert cli.console_main() == 0  # then main() runs in this process: --version
    assert seen == [["/venv/bin/grpokit", "--version"]]

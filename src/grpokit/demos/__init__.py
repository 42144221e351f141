"""Demos and studies: `grpokit demo` (demo.py), `grpokit demo search` (search.py) and
`grpokit study` (study.py)."""

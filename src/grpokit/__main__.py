"""`python -m grpokit ...`: the same as the `grpokit` command."""
import sys

from grpokit.cli import console_main

# Started again as `-m grpokit`: as a script path, src/grpokit would shadow the stdlib
# (`types`, `logging`).
sys.exit(console_main(["-m", "grpokit"]))

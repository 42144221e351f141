"""`python -m grpokit.bench`: the entry the orchestrator uses for its child runs."""
import sys

from grpokit.bench.cli import main

if "--in-process" in sys.argv:  # a measured run: under the allocator `grpokit train` uses
    from grpokit.engine.allocator import reexec_tuned

    reexec_tuned(["-m", "grpokit.bench", *sys.argv[1:]])
sys.exit(main())

"""grpokit's own speed paths: C kernels and their ctypes glue (native/), the lean decode
step (lean.py, packed.py, stepper.py, threads.py), the C training pass (native_pass.py,
lean_train.py), malloc tuning (allocator.py) and memory release (memory.py). Each computes
the same function as its reference path (a test per path)."""

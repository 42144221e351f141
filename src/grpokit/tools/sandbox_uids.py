"""A uid of its own for each concurrent sandboxed call (only when the trainer is root).

Two calls that run as different uids cannot signal, trace or read /proc of each other
even without a PID namespace, and RLIMIT_NPROC (counted per uid) becomes a per-call
limit. A uid is held through an exclusive flock on a file named after it, so calls in
several trainer processes on one machine (data-parallel ranks) never share one, and a
crashed trainer releases its uids with its file descriptors. The caller kills every
process of the uid before releasing it, so the next call starts with none.
"""
from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import threading

DEFAULT_BASE, DEFAULT_SIZE = 1_800_000_000, 4096  # far above any account or subordinate-id range


class UidPool:
    def __init__(self, base: int = DEFAULT_BASE, size: int = DEFAULT_SIZE, lock_dir: str | None = None):
        if not (1000 <= base and size >= 1 and base + size < 2**31 - 1):
            raise ValueError(f"sandbox uid pool: base {base} and size {size} must lie in [1000, 2**31)")
        self.base, self.size = base, size
        self.lock_dir = lock_dir or os.path.join(tempfile.gettempdir(), f"grpokit-sandbox-uids-{os.geteuid()}")
        self._next = 0
        self._lock = threading.Lock()

    def _dir(self) -> str:
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        st = os.lstat(self.lock_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionError(f"sandbox uid pool: {self.lock_dir} must be a directory of uid {os.geteuid()} "
                                  "with mode 0700")
        return self.lock_dir

    def acquire(self) -> tuple[int, int]:
        """(uid, fd holding it); release with release(fd)."""
        d = self._dir()
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % self.size
        for i in range(self.size):
            uid = self.base + (start + i) % self.size
            fd = os.open(os.path.join(d, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return uid, fd
        raise RuntimeError(f"sandbox uid pool: all {self.size} uids from {self.base} are in use")

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the descriptor drops the flock

"""The first code the sandboxed interpreter runs (its source is passed with `python -c`).

Run as `python -I -S -u -B -c <this file> CONFIG` with the user's code on stdin,
inside whatever namespaces the parent set up (see sandbox_layers); CONFIG is the repr()
of a dict of literals. Before any user
code runs it, in this order:

1. reads the code, then closes stdin;
2. sets resource limits (soft = hard, so the code cannot raise them);
3. when started as root, drops to the call's own uid/gid with no supplementary groups
   (all capabilities go with it);
4. sets no_new_privs and applies a Landlock ruleset (read-only beneath the interpreter's
   directories, read-write beneath scratch, no TCP, no signals or abstract Unix sockets
   outside the call) and a seccomp filter (the parent builds it: sandbox_seccomp),
   where the config asks for them (Landlock gives no right to execute any file, so no
   shell or other program can be started); then forgets _ctypes;
5. installs the audit hook (an extra layer on top of the OS ones): its state lives only
   in closure variables bound to immutable values and C functions captured here, so no
   flag, module global or monkey-patched library function changes what it allows; it
   never calls the user's code (a path must be an exact str or bytes), so no frame of it
   is ever on the user's stack, and gc's object lists (the way to the hook function and
   its closure cells) are refused;
6. runs the code in a fresh `__main__` module; this file's own module is emptied first.

Exit codes the parent reads: 3 memory limit (MemoryError), 5 an operation was refused,
6 the sandbox could not be set up (the message says which step).
Importing this module does nothing; only `__main__` runs it.
"""
import sys

EXIT_MEMORY, EXIT_BLOCKED, EXIT_SETUP = 3, 5, 6

# Landlock (linux/landlock.h): filesystem rights by ABI version, and the syscalls.
LL_CREATE, LL_ADD_RULE, LL_RESTRICT = 444, 445, 446  # same numbers on every architecture
LL_READ = 4 | 8  # READ_FILE | READ_DIR: no EXECUTE, so no shell or other program can be started
LL_FILE_ONLY = 1 | 2 | 4 | (1 << 14) | (1 << 15)  # rights a rule on a non-directory may hold


def landlock_fs_rights(abi):
    """All filesystem rights an ABI version knows (v1: 13, v2 +REFER, v3 +TRUNCATE, v5 +IOCTL_DEV)."""
    rights = (1 << 13) - 1
    for version, bit in ((2, 13), (3, 14), (5, 15)):
        if abi >= version:
            rights |= 1 << bit
    return rights


class Libc:
    """syscall() and prctl() through _ctypes directly: the ctypes package's import makes a
    libffi callback and costs several ms per call, and we need three C functions."""

    def __init__(self):
        import _ctypes

        class c_long(_ctypes._SimpleCData):
            _type_ = "l"

        class c_char(_ctypes._SimpleCData):
            _type_ = "c"

        class Func(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = c_long

        class Handle:
            _handle = _ctypes.dlopen(None, 0x102)  # RTLD_NOW | RTLD_GLOBAL: the process's libc

        self.long, self.char, self.addressof, self.get_errno = c_long, c_char, _ctypes.addressof, _ctypes.get_errno
        self.syscall, self.prctl = Func(("syscall", Handle)), Func(("prctl", Handle))

    def buffer(self, data):
        buf = (self.char * len(data))()
        buf.raw = data
        return buf

    def check(self, rc, what):
        if rc < 0:
            import os

            err = self.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return rc


def apply_landlock(libc, abi, read_paths, write_paths):
    import os
    import struct

    fs = landlock_fs_rights(abi)
    net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP handled, no rule: no TCP at all
    scoped = 3 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL: nothing outside this call
    attr = libc.buffer(struct.pack("<QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24])
    ruleset = libc.check(libc.syscall(LL_CREATE, attr, libc.long(len(attr)), 0), "landlock_create_ruleset")
    for paths, rights in ((read_paths, LL_READ), (write_paths, fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine does not have
            allowed = rights & fs if os.path.isdir(path) else rights & fs & LL_FILE_ONLY
            rule = libc.buffer(struct.pack("<Qi", allowed, fd))  # struct landlock_path_beneath_attr (packed)
            rc = libc.syscall(LL_ADD_RULE, ruleset, 1, rule, 0)  # 1: LANDLOCK_RULE_PATH_BENEATH
            os.close(fd)
            libc.check(rc, f"landlock_add_rule({path})")
    libc.check(libc.syscall(LL_RESTRICT, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)


def apply_seccomp(libc, program):
    import struct

    buf = libc.buffer(program)
    fprog = libc.buffer(struct.pack("<H6xQ", len(program) // 8, libc.addressof(buf)))  # struct sock_fprog
    libc.check(libc.prctl(22, 2, fprog, 0, 0), "prctl(PR_SET_SECCOMP)")  # SECCOMP_MODE_FILTER


def make_hook(scratch, read_roots, read_files):
    """(the audit hook, the list it appends refused operations to). Every name the hook
    uses is a closure variable bound here to an immutable value or a C function, so
    nothing the user's code can reach changes what it allows."""
    import posix

    lstat, readlink, getcwd = posix.lstat, posix.readlink, posix.getcwd
    str_, bytes_, int_, type_, tuple_, any_ = str, bytes, int, type, tuple, any  # builtins can be patched
    perm_error, os_error = PermissionError, OSError
    write_stderr = sys.__stderr__.write
    scratch_prefix = scratch.rstrip("/") + "/"
    read_prefixes = tuple(r.rstrip("/") + "/" for r in read_roots)
    read_exact = frozenset(read_roots) | frozenset(read_files)
    refused = frozenset((
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
        "os.kill", "os.killpg", "signal.pthread_kill", "socket.__new__", "socket.connect", "socket.bind",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.cdata", "ctypes.call_function", "os.putenv", "os.unsetenv", "sys.setprofile", "sys.settrace",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sqlite3.connect", "sqlite3.connect/handle",
        "sqlite3.enable_load_extension", "sqlite3.load_extension", "dbm.open", "mmap.__new__", "os.setns",
        "os.unshare",
    ))
    refused_imports = frozenset((
        "ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "multiprocessing", "_multiprocessing",
        "sqlite3", "_sqlite3", "dbm", "_dbm", "_gdbm", "_posixshmem", "_xxsubinterpreters", "_interpreters",
        "_xxinterpchannels", "_interpchannels", "_interpqueues", "concurrent.interpreters", "mmap", "pty",
    ))
    write_events = frozenset((
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
        "os.truncate", "os.utime", "os.chflags", "os.lchown", "os.mkfifo", "os.mknod", "shutil.rmtree",
        "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.move", "shutil.chown", "os.chdir",
    ))
    read_events = frozenset(("os.listdir", "os.scandir", "glob.glob", "os.walk", "os.fwalk"))
    write_flags = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND
    violations = []  # read by main() at exit: a refused operation makes the call `blocked`

    def deny(what):
        violations.append(what)
        try:
            write_stderr(f"[sandbox] blocked: {what}\n")
        except BaseException:
            pass
        raise perm_error(f"sandbox: {what} is not allowed")

    def resolve(path):
        """Absolute path with symlinks followed, from the current directory; C calls only."""
        if type_(path) is bytes_:
            path = path.decode("utf-8", "surrogateescape")
        elif type_(path) is not str_:
            deny(f"a path of type {type_(path).__name__} (give a str)")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        todo, done, hops = path.split("/"), [], 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join(done + [part])
            try:
                mode = lstat(here).st_mode
            except os_error:
                return "/".join([here] + todo)  # does not exist (yet): nothing further to follow
            if mode & 0o170000 == 0o120000:
                hops += 1
                if hops > 40:
                    deny("a loop of symbolic links")
                target = readlink(here)
                todo = target.split("/") + todo
                if target.startswith("/"):
                    done = []
                continue
            done.append(part)
        return "/" + "/".join(done)

    def inside_scratch(real):
        return real == scratch or real.startswith(scratch_prefix)

    def readable(real):
        return real in read_exact or real.startswith(read_prefixes)

    def hook(event, args):
        if event in refused:
            deny(event)
        elif event == "import":
            name = args[0]
            if type_(name) is str_ and (name in refused_imports or name.split(".")[0] in refused_imports):
                deny(f"importing {name}")
        elif event == "open":
            path, mode, flags = (tuple_(args) + (None, None))[:3]
            if type_(path) is int_:
                return
            writing = (type_(mode) is str_ and any_(c in mode for c in "wax+")) or (
                type_(flags) is int_ and flags & write_flags)
            real = resolve(path)
            if inside_scratch(real) or (not writing and readable(real)):
                return
            deny(f"{'writing' if writing else 'reading'} {real} (outside the scratch directory)")
        elif event in write_events or event in read_events:
            for a in tuple_(args)[:2]:
                if type_(a) is int_ or a is None:
                    continue
                real = resolve(a)
                if not inside_scratch(real) and not (event in read_events and readable(real)):
                    deny(f"{event} on {real} (outside the scratch directory)")

    return hook, violations


def main():
    # Locals only from here on: the module's globals are cleared before the user's code.
    import os
    import resource
    import sys

    cfg = eval(sys.argv[1], {"__builtins__": {}})  # the parent's repr() of a dict of literals (json costs an import)
    code = sys.stdin.read()
    sys.stdin.close()
    step = "limits"
    try:
        mb = 1024 * 1024
        for name, soft, hard in (("RLIMIT_CPU", cfg["cpu"], cfg["cpu"] + 1), ("RLIMIT_AS", cfg["mem_mb"] * mb, None),
                                 ("RLIMIT_FSIZE", cfg["fsize"], None), ("RLIMIT_NPROC", cfg["nproc"], None),
                                 ("RLIMIT_NOFILE", 64, None), ("RLIMIT_CORE", 0, None)):
            # SIGXCPU at the soft CPU limit, SIGKILL one second later; the others: soft = hard
            resource.setrlimit(getattr(resource, name), (soft, soft if hard is None else hard))
        scratch = os.path.realpath(cfg["scratch"])
        os.chdir(scratch)
        if cfg.get("uid") is not None:
            step = "dropping to the call's uid"
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        if cfg.get("landlock") or cfg.get("seccomp"):
            step = "no_new_privs"
            libc = Libc()
            libc.check(libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
            if cfg.get("landlock"):
                step = "Landlock"
                apply_landlock(libc, cfg["landlock"], cfg["read_roots"] + cfg["read_files"], [scratch])
            if cfg.get("seccomp"):
                step = "seccomp"
                apply_seccomp(libc, bytes.fromhex(cfg["seccomp"]))
            del libc
            for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
                del sys.modules[name]  # so `import _ctypes` runs the import machinery (and the hook) again
        violations = ()
        if cfg["guard"]:
            step = "audit hook"
            hook, violations = make_hook(scratch, cfg["read_roots"], cfg["read_files"])
            sys.addaudithook(hook)
            del hook
    except Exception as e:  # noqa: BLE001 - any failure here means no sandbox: refuse to run the code
        sys.__stderr__.write(f"[sandbox] setup failed at {step}: {type(e).__name__}: {e}\n")
        os._exit(EXIT_SETUP)

    # The user's code gets a fresh __main__; this module's names are gone from it.
    exit_memory, exit_blocked = EXIT_MEMORY, EXIT_BLOCKED
    boot = sys.modules["__main__"]
    user_main = type(sys)("__main__")
    user_main.__builtins__ = __builtins__
    sys.modules["__main__"] = user_main
    boot.__dict__.clear()
    status = 0
    try:
        exec(compile(code, "<sandbox>", "exec"), user_main.__dict__)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MemoryError:
        sys.__stderr__.write("MemoryError: the memory limit was reached\n")
        os._exit(exit_memory)
    except BaseException:
        try:  # the traceback without this file's frame (traceback is imported only when needed)
            import traceback

            lines = traceback.format_exc().splitlines()
            sys.__stderr__.write("\n".join(x for x in lines if 'File "<string>"' not in x) + "\n")
        except BaseException:
            pass
        status = 1
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os._exit(exit_blocked if violations else status)


if __name__ == "__main__":
    main()

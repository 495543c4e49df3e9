"""The small kernel include tree BCC compiles flowscope's BPF programs against.

BCC looks for kernel headers in ``/lib/modules/$(uname -r)/build``, which does
not exist on hosts without a header package for the running kernel. The
programs only need the uapi headers that linux-libc-dev ships, laid out the way
a kernel tree lays them out, plus a few stubs for the kernel-internal headers
BCC's own ``helpers.h`` includes. The loader points ``BCC_KERNEL_SOURCE`` at the
result (~40 files, ~190 KB, built in a few milliseconds).

The tree goes to a cache directory the running user can write, never into the
installed package: ``$CACHE_DIRECTORY`` (systemd's ``CacheDirectory=``), else
``$XDG_CACHE_HOME/flowscope`` or ``~/.cache/flowscope``, else
``/var/cache/flowscope``, else a private temporary directory removed at exit.
Files are made world-readable so a tree built by root serves a service user too.
It is rebuilt when this recipe or the uapi headers change.

Standard library only, so it also runs as a script::

    python3 flowscope/sensor/kinclude.py [OUTDIR]     # prints the tree's path
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

USR_INCLUDE = Path("/usr/include")
STAMP = ".flowscope-kinclude"

# Kernel-internal headers that BCC's helpers.h includes; the programs need none of their
# content. helpers.h refuses to build unless the kernel config says BPF is there.
STUBS = {
    "include/linux/kconfig.h": "#define CONFIG_BPF_SYSCALL 1\n",
    "include/linux/log2.h": "",
    "include/linux/version.h": (
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
        "#define LINUX_VERSION_CODE KERNEL_VERSION(6, 0, 0)\n"
    ),
    "include/linux/types.h": """\
#ifndef _FS_STUB_LINUX_TYPES_H
#define _FS_STUB_LINUX_TYPES_H
#include <uapi/linux/types.h>
typedef __u8 u8;
typedef __s8 s8;
typedef __u16 u16;
typedef __s16 s16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef __kernel_size_t size_t;
typedef unsigned long uintptr_t;
typedef _Bool bool;
#define true 1
#define false 0
#endif
""",
    "arch/{arch}/include/asm/page.h": "#define PAGE_SHIFT 12\n#define PAGE_SIZE (1UL << PAGE_SHIFT)\n",
    # BCC force-includes its own copy of bpf.h (as virtual_bpf.h); a second one collides.
    "include/uapi/linux/bpf.h": "",
}

# uname machine -> (kernel arch directory, Debian multiarch triplet)
_ARCHES = {
    "x86_64": ("x86", "x86_64-linux-gnu"),
    "aarch64": ("arm64", "aarch64-linux-gnu"),
}


class KincludeError(RuntimeError):
    """The include tree cannot be built; the message is one line saying why."""


def cache_roots() -> list[Path]:
    """Candidate flowscope cache directories, best first (none is created here)."""
    roots = []
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        roots.append(Path(systemd.split(":")[0]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        roots.append(Path(xdg) / "flowscope")
    elif os.environ.get("HOME", "").startswith("/") and os.environ["HOME"] != "/":
        roots.append(Path(os.environ["HOME"]) / ".cache" / "flowscope")
    roots.append(Path("/var/cache/flowscope"))
    return roots


def writable_dir(path: Path) -> bool:
    """Create ``path`` if needed and check a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _sources(usr_include: Path) -> tuple[str, Path]:
    """(kernel arch directory name, the uapi asm directory) for this machine."""
    arch, triplet = _ARCHES.get(platform.machine(), _ARCHES["x86_64"])
    asm = usr_include / triplet / "asm"
    if not (usr_include / "linux" / "bpf.h").is_file() or not asm.is_dir():
        raise KincludeError(
            f"uapi headers missing ({usr_include}/linux/bpf.h, {asm}): "
            "install linux-libc-dev")
    return arch, asm


def _key(usr_include: Path) -> str:
    """What the tree depends on: this recipe and the installed uapi headers."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    st = (usr_include / "linux" / "bpf.h").stat()
    h.update(f"{usr_include}:{st.st_size}:{st.st_mtime_ns}:{platform.machine()}".encode())
    return h.hexdigest()


def _readable(root: Path) -> None:
    """World-readable tree (a service user reads what root built)."""
    for d, dirs, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def build(out: Path, usr_include: Path | None = None) -> Path:
    """Build (or keep, when current) the include tree at ``out``; return ``out``.

    The tree is written beside ``out`` and renamed into place, so a concurrent
    reader never sees half a tree.

    Raises
    ------
    KincludeError
        When the uapi headers are missing or ``out`` cannot be written.
    """
    usr_include = usr_include or USR_INCLUDE
    arch, asm = _sources(usr_include)
    key = _key(usr_include)
    try:
        if (out / STAMP).read_text() == key:
            return out
    except OSError:
        pass
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".kinclude.", dir=out.parent))
    except OSError as exc:
        raise KincludeError(f"cannot write the kernel include tree in {out.parent}: "
                            f"{exc.strerror or exc}") from None
    try:
        shutil.copytree(usr_include / "linux", tmp / "include/uapi/linux", symlinks=True)
        shutil.copytree(usr_include / "asm-generic", tmp / "include/uapi/asm-generic",
                        symlinks=True)
        shutil.copytree(asm, tmp / f"arch/{arch}/include/uapi/asm", symlinks=True)
        for rel, text in STUBS.items():
            p = tmp / rel.format(arch=arch)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        (tmp / STAMP).write_text(key)
        _readable(tmp)
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / STAMP).is_file():  # nobody else put a tree there
                raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise KincludeError(f"cannot write the kernel include tree at {out}: "
                            f"{exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_private: list[Path] = []


def prepare(usr_include: Path | None = None) -> Path:
    """The include tree in the first writable cache directory (see module docstring)."""
    usr_include = usr_include or USR_INCLUDE
    _sources(usr_include)  # a missing header package is reported as such, not as "unwritable"
    for root in cache_roots():
        if writable_dir(root):
            try:
                return build(root / "kinclude", usr_include)
            except KincludeError:
                continue
    if not _private:
        try:
            _private.append(Path(tempfile.mkdtemp(prefix="flowscope-kinclude.")))
        except OSError as exc:
            raise KincludeError("no writable directory for the kernel include tree "
                                f"(tried {', '.join(map(str, cache_roots()))} and "
                                f"{tempfile.gettempdir()}): {exc.strerror or exc}") from None
        atexit.register(shutil.rmtree, _private[0], True)
    return build(_private[0] / "kinclude", usr_include)


def main(argv: list[str] | None = None) -> int:
    """Build the tree (in OUTDIR, or the cache) and print its path."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        path = build(Path(argv[0]).resolve()) if argv else prepare()
    except KincludeError as exc:
        print(f"kinclude: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""numba kernels: frame parsing, capture-file walking and the flow engine (no I/O, no Python objects).

numba's on-disk cache invalidates a function only when its own source file
changes, not when a kernel it calls from another module does (the engine
inlines ``zeek.py`` and calls helpers across files). So on import the cache
files of this package are dropped whenever any kernel source changed since
they were written: a stale compiled kernel can never run.
"""

import hashlib
import os
from pathlib import Path


def _guard_numba_cache() -> None:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for src in sorted(here.glob("*.py")):
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or here / "__pycache__")
    stamp = cache / "flowscope-kernels.sha256"
    want = digest.hexdigest()
    try:
        if stamp.read_text() == want:
            return
    except OSError:
        pass
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for f in cache.glob("*.nb[ic]"):
            if f.name.split(".")[0] in {p.stem for p in here.glob("*.py")}:
                f.unlink(missing_ok=True)
        stamp.write_text(want)
    except OSError:
        pass  # read-only install: numba falls back to compiling in memory


_guard_numba_cache()

"""Build hook: the kernels compiled ahead of time into ``flowscope._aot`` (flowscope/aotbuild.py).

The module is optional: without a C compiler (or with ``FLOWSCOPE_AOT=0``) the wheel holds
no module, and flowscope compiles its kernels with numba's JIT on first use instead.
Editable installs skip it (``scripts/setup.sh`` builds the module in the checkout).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class build_aot(build_ext):
    def run(self):
        if os.environ.get("FLOWSCOPE_AOT", "1") == "0" or getattr(self, "editable_mode", False):
            self.extensions = []
            return
        self.build_extension(self.extensions[0])

    def build_extension(self, ext):
        dest = Path(self.get_ext_fullpath(ext.name)).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        # compile the very files the wheel holds (build_py has copied them), so that the
        # module's hash is theirs; numba's cache goes to a temporary directory, not the wheel
        pkgroot = Path(self.get_finalized_command("build_py").build_lib).resolve()
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, FLOWSCOPE_JIT="1", PYTHONPATH=str(pkgroot),
                       NUMBA_CACHE_DIR=tmp, PYTHONDONTWRITEBYTECODE="1")
            r = subprocess.run([sys.executable, "-m", "flowscope.aotbuild", "--out-dir",
                                str(dest.parent)], env=env, cwd=tmp)
        if r.returncode != 0:
            print("flowscope: the ahead-of-time kernel module was not built; "
                  "the kernels will be compiled on first use", file=sys.stderr)

    def get_outputs(self):
        return [p for p in super().get_outputs() if os.path.exists(p)]


setup(ext_modules=[Extension("flowscope._aot", sources=[])], cmdclass={"build_ext": build_aot})

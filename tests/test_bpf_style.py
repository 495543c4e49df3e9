"""bpf/ follows the repository's .clang-format (the Linux kernel's style, 100 columns).

Needs clang-format (scripts/setup.sh installs it); it skips without it, unless
FLOWSCOPE_REQUIRE_BPF=1 (CI), where a missing tool fails like the other kernel tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bpf_helpers import require_bpf

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "bpf").glob("*.[ch]"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_bpf_source_is_clang_formatted(path):
    if shutil.which("clang-format") is None:
        require_bpf("clang-format")
    formatted = subprocess.run(["clang-format", "--style=file", str(path)], capture_output=True,
                               text=True, timeout=30, check=True).stdout
    assert formatted == path.read_text(), f"run: clang-format -i {path.relative_to(REPO)}"


def test_every_bpf_source_is_checked():
    assert {p.name for p in SOURCES} >= {"fs_shared.h", "fs_parse.h", "fs_flow.h", "fs_maps.h",
                                         "fs_xdp.c", "fs_tc.c", "fs_drops.c"}

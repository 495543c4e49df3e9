#!/usr/bin/env bash
# Set up flowscope on a Debian 12 host, as root: system packages, a virtualenv at .venv with the
# project installed editable, and BCC (from the distro) importable inside it.
# Idempotent: when everything is already in place it only checks and returns (~1 s).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

APT_PACKAGES=(python3 python3-venv python3-dev python3-bpfcc libbpfcc bpftool iproute2 ethtool
              linux-libc-dev tcpdump iputils-ping tshark softflowd nfdump argus-server argus-client
              clang-format tcptrace nftables gcc)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "setup: missing packages (${missing[*]}); run this script as root" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer once, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=/usr/bin/python3   # the interpreter BCC's Debian package is built for
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# BCC's Python package is pure Python over libbcc.so (ctypes); PyPI's "bcc" is unrelated.
if [[ -d /usr/lib/python3/dist-packages/bcc && ! -e "$site/bcc" ]]; then
    ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc"
fi
stamp=".venv/.flowscope-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "setup: installing flowscope and its dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,live]"
    touch "$stamp"
fi
# BCC compiles against kernel headers; where the running kernel has none, the loader builds a
# small uapi include tree from linux-libc-dev in the user's cache (~/.cache/flowscope/kinclude,
# or /var/cache/flowscope under systemd). Build it now so a problem shows here, not at start.
if [[ ! -d /lib/modules/$(uname -r)/build/include ]]; then
    .venv/bin/python -m flowscope.sensor.kinclude >/dev/null
fi
# Compile every numba kernel into the cache now (a no-op when the cache is current), so the
# first `flowscope pcap` or `flowscope live` does not pay for it.
FLOWSCOPE_JIT=1 .venv/bin/flowscope warmup >/dev/null
# Then the same kernels ahead of time into flowscope/_aot*.so (numba.pycc; needs a C compiler),
# so that a run imports neither numba nor llvmlite. Rebuilt only when the kernel sources or
# NUMBA_* settings changed (the module carries their hash); without a compiler flowscope uses
# the JIT.
if ! .venv/bin/python -c 'import sys, flowscope._kernels as K; sys.exit(K.MODE != "aot")' \
        2>/dev/null; then
    if command -v cc >/dev/null 2>&1; then
        echo "setup: compiling the kernels ahead of time (about a minute)" >&2
        FLOWSCOPE_JIT=1 .venv/bin/python -m flowscope.aotbuild --quiet \
            || echo "setup: ahead-of-time build failed; flowscope will use the JIT" >&2
    else
        echo "setup: no C compiler (cc): flowscope will compile its kernels with the JIT" >&2
    fi
fi
echo "setup: ready (.venv/bin/flowscope)" >&2

#!/usr/bin/env bash
# Build the small kernel include tree BCC compiles flowscope's BPF programs against.
#
# BCC looks for kernel headers in /lib/modules/$(uname -r)/build, which does not exist on hosts
# without a header package for the running kernel. Our programs only need the uapi headers that
# linux-libc-dev ships, laid out the way a kernel tree lays them out, plus a few stubs for the
# kernel-internal headers BCC's own helpers.h includes. The loader points BCC_KERNEL_SOURCE at
# the result. Idempotent: rebuilds only when the tree is missing or older than this script.
#
# Usage: scripts/make_kinclude.sh [OUTDIR]     (default: build/kinclude in the repository)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/build/kinclude}"
stamp="$out/.flowscope-kinclude"
if [[ -f "$stamp" && "$stamp" -nt "${BASH_SOURCE[0]}" && "$stamp" -nt /usr/include/linux/bpf.h ]]; then
    exit 0
fi
arch_inc=/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/asm
[[ -d "$arch_inc" ]] || arch_inc=/usr/include/x86_64-linux-gnu/asm
if [[ ! -f /usr/include/linux/bpf.h || ! -d "$arch_inc" ]]; then
    echo "make_kinclude: uapi headers missing; install linux-libc-dev" >&2
    exit 1
fi

tmp="$(mktemp -d "${out%/*}/.kinclude.XXXXXX" 2>/dev/null || { mkdir -p "${out%/*}"; mktemp -d "${out%/*}/.kinclude.XXXXXX"; })"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/include/uapi" "$tmp/include/linux" "$tmp/arch/x86/include/uapi" \
         "$tmp/arch/x86/include/asm"
cp -r /usr/include/linux "$tmp/include/uapi/linux"
cp -r /usr/include/asm-generic "$tmp/include/uapi/asm-generic"
cp -r "$arch_inc" "$tmp/arch/x86/include/uapi/asm"
# BCC force-includes its own copy of bpf.h (as virtual_bpf.h); a second definition collides.
: > "$tmp/include/uapi/linux/bpf.h"
# Kernel-internal headers that BCC's helpers.h includes; the programs need none of their content.
# helpers.h refuses to build unless the kernel config says BPF is there.
echo '#define CONFIG_BPF_SYSCALL 1' > "$tmp/include/linux/kconfig.h"
: > "$tmp/include/linux/log2.h"
cat > "$tmp/include/linux/version.h" <<'H'
#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))
#define LINUX_VERSION_CODE KERNEL_VERSION(6, 0, 0)
H
cat > "$tmp/include/linux/types.h" <<'H'
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
H
cat > "$tmp/arch/x86/include/asm/page.h" <<'H'
#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
H
rm -rf "$out"
mkdir -p "${out%/*}"
mv "$tmp" "$out"
trap - EXIT
touch "$stamp"
echo "make_kinclude: wrote $out" >&2

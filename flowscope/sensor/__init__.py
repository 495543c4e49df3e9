"""Live sensor: the BPF half of flowscope (XDP ingress + TC egress) and its userspace plumbing.

What's here:
  layout   numpy dtypes + IntEnums mirroring bpf/fs_shared.h (no bcc needed)
  loader   compile/load both programs with BCC; layout checks; BPF_PROG_TEST_RUN
  attach   XDP / tcx links (gone with the process), netlink / clsact fallbacks
  ring     mmap + numba drain of the event ring buffer, epoll wake-ups
  maps     counters, flow scans, idle sweeps, batch drains into numpy
  clock    monotonic -> wall-clock offset

This is the only package that imports ``bcc``, and only when a function needs it.
"""

from . import layout

__all__ = ["layout"]

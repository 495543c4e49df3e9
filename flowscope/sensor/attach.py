"""Attach the sensor's programs to an interface and detach them again, leaving nothing behind.

Preferred: BPF links (``BPF_LINK_CREATE``), which the kernel removes when their
last fd closes, so a process killed by SIGKILL leaves no program attached:
* XDP (ingress): an XDP link, generic (SKB) mode by default, native on request.
* TC (egress): a tcx link (attach type ``BPF_TCX_EGRESS``, kernels >= 6.6).
Fallbacks for older kernels: XDP through netlink (BCC's ``attach_xdp``) and TC
through a clsact qdisc + a direct-action bpf filter (pyroute2). Those outlive
the process, so they are removed explicitly in ``detach()``; use the
:class:`Attachment` as a context manager (or call ``detach`` in ``finally``).

Links and netlink attachments act on interfaces of the calling thread's
network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass, field

from .loader import Loaded, bpf_syscall

BPF_LINK_CREATE = 28
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_ifindex", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        # tcx: relative_fd/id, then expected_revision; zero = append, any revision.
        ("relative", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("expected_revision", ctypes.c_uint64),
        ("_rest", ctypes.c_uint64 * 4),
    ]


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """``BPF_LINK_CREATE``; returns the link fd (closing it detaches)."""
    a = _LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=attach_type,
                        flags=flags)
    return bpf_syscall(BPF_LINK_CREATE, a)


def ifindex_of(ifname: str) -> int:
    """Interface index in the calling thread's namespace; OSError when missing."""
    return socket.if_nametoindex(ifname)


@dataclass
class Attachment:
    """Programs attached to one interface; ``detach()`` undoes every step that succeeded."""

    ifname: str
    ifindex: int
    xdp_mode: str
    xdp_link_fd: int = -1
    tc_link_fd: int = -1
    xdp_netlink: object = None  # the BCC object used for a netlink XDP attachment
    tc_clsact: bool = False  # a pyroute2 filter we must delete
    how: list[str] = field(default_factory=list)

    def detach(self) -> None:
        """Remove everything attached; safe to call twice."""
        errors = []
        for name in ("xdp_link_fd", "tc_link_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError as e:
                    errors.append(e)
        if self.xdp_netlink is not None:
            b, self.xdp_netlink = self.xdp_netlink, None
            try:
                b.remove_xdp(self.ifname, _xdp_flags(self.xdp_mode))
            except Exception as e:  # noqa: BLE001 - keep detaching the rest
                errors.append(e)
        if self.tc_clsact:
            self.tc_clsact = False
            try:
                _clsact_remove(self.ifindex)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise RuntimeError(f"detach from {self.ifname}: {errors}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()


def _xdp_flags(mode: str) -> int:
    if mode == "generic":
        return XDP_FLAGS_SKB_MODE
    if mode == "native":
        return XDP_FLAGS_DRV_MODE
    raise ValueError(f"xdp mode must be 'generic' or 'native', not {mode!r}")


def _clsact_add(ifindex: int, prog_fd: int) -> None:
    try:
        from pyroute2 import IPRoute  # noqa: PLC0415 - optional, fallback only
    except ImportError as e:
        raise RuntimeError("tcx links unavailable and pyroute2 not installed "
                           "(pip install 'flowscope[live]')") from e
    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except Exception as e:  # noqa: BLE001 - an existing clsact is fine
            if getattr(e, "code", None) != errno.EEXIST:
                raise
        ipr.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name="fs_tc",
               parent="ffff:fff3", classid=1, direct_action=True)


def _clsact_remove(ifindex: int) -> None:
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        ipr.tc("del", "clsact", ifindex)


def attach(loaded: Loaded, ifname: str, xdp_mode: str = "generic", egress: bool = True,
           allow_fallback: bool = True) -> Attachment:
    """Attach XDP (ingress) and, unless ``egress=False``, TC (egress) to ``ifname``.

    Parameters
    ----------
    loaded : Loaded
        From :func:`flowscope.sensor.loader.load`.
    ifname : str
        Interface in the calling thread's network namespace.
    xdp_mode : {"generic", "native"}
        XDP attach mode (generic works on every device; native needs driver support).
    allow_fallback : bool
        Use netlink XDP / clsact TC when links are unsupported (those survive a SIGKILL).

    Returns
    -------
    Attachment
        Call ``detach()`` (or use it as a context manager) to undo.
    """
    flags = _xdp_flags(xdp_mode)
    at = Attachment(ifname=ifname, ifindex=ifindex_of(ifname), xdp_mode=xdp_mode)
    try:
        try:
            at.xdp_link_fd = link_create(loaded.xdp_fd, at.ifindex, BPF_XDP, flags)
            at.how.append(f"xdp link ({xdp_mode})")
        except OSError as e:
            if not allow_fallback or e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            fn = loaded.bpf.load_func(b"fs_xdp", type(loaded.bpf).XDP)
            loaded.bpf.attach_xdp(ifname, fn, flags)
            at.xdp_netlink = loaded.bpf
            at.how.append(f"xdp netlink ({xdp_mode})")
        if egress:
            try:
                at.tc_link_fd = link_create(loaded.tc_fd, at.ifindex, BPF_TCX_EGRESS)
                at.how.append("tcx egress link")
            except OSError as e:
                if not allow_fallback or e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                _clsact_add(at.ifindex, loaded.tc_fd)
                at.tc_clsact = True
                at.how.append("clsact egress filter")
    except BaseException:
        at.detach()
        raise
    return at

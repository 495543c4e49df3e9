"""Attach the sensor's programs to an interface and detach them again, leaving nothing behind.

Preferred: BPF links (``BPF_LINK_CREATE``), which the kernel removes when their
last fd closes, so a process killed by SIGKILL leaves no program attached:
* ingress (``ingress="auto"``, the default): native XDP where the driver runs it
  before building an skb; otherwise (veth, whose native mode only converts each
  skb, see ``SKB_NATIVE_DRIVERS``, or a driver without native XDP) a tcx ingress
  link, which costs less than generic XDP (that copies most skbs to give them
  256 bytes of headroom); generic XDP only where tcx is missing (kernels < 6.6).
  ``ingress="xdp"`` insists on XDP (``xdp_mode``: auto = native, else generic;
  generic at once on veth), ``ingress="tc"`` on tcx (also for an interface whose
  XDP hook another program holds).
* egress: a tcx link (attach type ``BPF_TCX_EGRESS``, kernels >= 6.6).
tcx links are appended to the interface's chain and our programs return
TCX_NEXT, so programs before and after ours keep seeing every packet. An XDP
hook already held by another program is never replaced: ``XdpBusy``.
Fallbacks for older kernels: XDP through netlink (BCC's ``attach_xdp``, only if
no program is attached) and TC through a clsact qdisc + a direct-action bpf
filter (pyroute2). Those outlive the process, so they are removed explicitly in
``detach()``; use the :class:`Attachment` as a context manager (or call
``detach`` in ``finally``).

Links and netlink attachments act on interfaces of the calling thread's
network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field

from .loader import Loaded, bpf_syscall

BPF_LINK_CREATE = 28
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
#: tcx attach position (``BPF_LINK_CREATE`` flags): before / after the relative program,
#: or first / last of the chain when no relative program is given.
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
SIOCETHTOOL = 0x8946
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
ETHTOOL_GDRVINFO = 3
#: ethtool get commands of the offloads that hand the hooks merged packets (each answers an
#: ethtool_value); LRO is a bit of ETHTOOL_GFLAGS
ETHTOOL_GFLAGS, ETH_FLAG_LRO = 0x25, 1 << 15
MERGING_OFFLOADS = (("LRO", ETHTOOL_GFLAGS), ("GRO", 0x2B), ("TSO", 0x1E), ("GSO", 0x23))
#: Drivers whose native XDP runs on skbs the stack has already built (converted to an
#: xdp_buff, through a NAPI ring of the driver's own): ``ingress: auto`` attaches tcx there
#: and ``xdp_mode: auto`` generic XDP. On veth, native costs more per packet than generic
#: (docs/benchmarks.md, "Native XDP against generic on veth") and turns on the pair's NAPI
#: receive path; tcx costs less than either ("Ingress on tcx instead of XDP").
SKB_NATIVE_DRIVERS = frozenset({"veth"})


class XdpBusy(RuntimeError):
    """Another program holds the interface's XDP hook; ``str()`` is one line."""


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


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0,
                relative: int = 0) -> int:
    """``BPF_LINK_CREATE``; returns the link fd (closing it detaches).

    For tcx, ``flags`` may hold ``BPF_F_BEFORE`` / ``BPF_F_AFTER`` and ``relative`` the fd
    of the program to attach next to (0: first / last of the chain).
    """
    a = _LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=attach_type,
                        flags=flags, relative=relative)
    return bpf_syscall(BPF_LINK_CREATE, a)


def ifindex_of(ifname: str) -> int:
    """Interface index in the calling thread's namespace; OSError when missing."""
    return socket.if_nametoindex(ifname)


def _ethtool(ifname: str, cmd: int, size: int) -> bytes | None:
    """The answer to ethtool get command ``cmd`` (a ``size``-byte struct starting with the
    command), None when the interface or its driver does not answer."""
    data = ctypes.create_string_buffer(struct.pack("=I", cmd), size)
    # struct ifreq: the name, then ifr_data (a pointer to the command's struct); 40 bytes
    ifr = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(data)).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    except OSError:
        return None
    return data.raw


def driver_of(ifname: str) -> str:
    """The interface's driver name (``ethtool -i``: ETHTOOL_GDRVINFO), "" when unknown."""
    info = _ethtool(ifname, ETHTOOL_GDRVINFO, 196)
    return "" if info is None else info[4:36].split(b"\0", 1)[0].decode("ascii", "replace")


def offloads_on(ifname: str) -> set[str]:
    """Which of the offloads that merge packets are on (``ethtool -k``): "LRO" and "GRO"
    (received segments joined before the stack, GRO also before TC and generic XDP), "TSO"
    and "GSO" (the stack hands the device, and TC egress, segments up to 64 KB that the
    wire carries as several packets). Offloads the driver does not report count as off."""
    on = set()
    for name, cmd in MERGING_OFFLOADS:
        v = _ethtool(ifname, cmd, 8)
        if v is not None:
            data = struct.unpack_from("=I", v, 4)[0]
            if (data & ETH_FLAG_LRO) if cmd == ETHTOOL_GFLAGS else data:
                on.add(name)
    return on


@dataclass
class Attachment:
    """Programs attached to one interface; ``detach()`` undoes every step that succeeded."""

    ifname: str
    ifindex: int
    xdp_mode: str
    ingress: str = "xdp"  # "xdp", "tc" (tcx ingress) or "" (no ingress hook)
    xdp_link_fd: int = -1
    tci_link_fd: int = -1
    tc_link_fd: int = -1
    xdp_netlink: object = None  # the BCC object used for a netlink XDP attachment
    tc_clsact: bool = False  # a pyroute2 filter we must delete
    promisc: object = None  # the packet socket whose membership holds promiscuous mode
    how: list[str] = field(default_factory=list)
    offloads: set = field(default_factory=set)  # offloads_on() when attached

    @property
    def merging(self) -> list[str]:
        """The offloads that hand our hooks merged packets (each counted as one, as a capture
        on this host shows it, where the wire carried several): LRO and, unless native XDP
        counts ingress (it runs before GRO), GRO on ingress; TSO and GSO on egress."""
        native = self.xdp_mode == "native" and (self.xdp_link_fd >= 0
                                                or self.xdp_netlink is not None)
        hooks = {"LRO": self.ingress != "", "GRO": self.ingress != "" and not native,
                 "TSO": self.egress, "GSO": self.egress}
        return [name for name, _ in MERGING_OFFLOADS if name in self.offloads and hooks[name]]

    @property
    def egress(self) -> bool:
        return self.tc_link_fd >= 0 or self.tc_clsact

    @property
    def label(self) -> str:
        """What is attached, for the start-up line: ``xdp native + tcx egress, promiscuous``."""
        parts = []
        if self.xdp_link_fd >= 0 or self.xdp_netlink is not None:
            parts.append(f"xdp {self.xdp_mode}")
        if self.tci_link_fd >= 0:
            parts.append("tcx ingress")
        if self.tc_link_fd >= 0:
            parts.append("tcx egress")
        elif self.tc_clsact:
            parts.append("clsact egress")
        return " + ".join(parts) + (", promiscuous" if self.promisc is not None else "")

    def detach(self) -> None:
        """Remove everything attached; safe to call twice."""
        errors = []
        if self.promisc is not None:
            self.promisc, s = None, self.promisc
            s.close()  # the kernel drops the membership, and promiscuity, with the socket
        for name in ("xdp_link_fd", "tci_link_fd", "tc_link_fd"):
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


def _busy(ifname: str) -> XdpBusy:
    return XdpBusy(f"live: {ifname} already has an XDP program that is not ours; to leave it "
                   "in place and count ingress on tcx instead, set sensor.ingress: tc")


def _attach_xdp(loaded: Loaded, at: Attachment, mode: str, allow_fallback: bool) -> None:
    """XDP link in ``mode`` (auto: native, else generic; generic on ``SKB_NATIVE_DRIVERS``);
    netlink when links are missing."""
    last = None
    modes: tuple = (mode,)
    if mode == "auto":
        modes = (("generic",) if driver_of(at.ifname) in SKB_NATIVE_DRIVERS
                 else ("native", "generic"))
    for m in modes:
        try:
            at.xdp_link_fd = link_create(loaded.xdp_fd, at.ifindex, BPF_XDP, _xdp_flags(m))
            at.xdp_mode = m
            at.how.append(f"xdp link ({m})")
            return
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.EEXIST):
                raise _busy(at.ifname) from None
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            last = e
    if not allow_fallback:
        raise last
    m = "generic" if mode == "auto" else mode
    if loaded.bpf is not None:
        bpf = loaded.bpf
        fn = bpf.load_func(b"fs_xdp", type(bpf).XDP)
    else:  # loaded in a child process: BCC's netlink calls are static methods
        from .loader import import_bcc

        bpf = import_bcc().BPF
        fn = type("_Fn", (), {"fd": loaded.xdp_fd})
    try:  # never replace a program someone else attached
        bpf.attach_xdp(at.ifname, fn, _xdp_flags(m) | XDP_FLAGS_UPDATE_IF_NOEXIST)
    except Exception as e:  # noqa: BLE001 - BCC raises a bare Exception
        if "busy" in str(e).lower() or "exist" in str(e).lower():
            raise _busy(at.ifname) from None
        raise
    at.xdp_netlink = bpf
    at.xdp_mode = m
    at.how.append(f"xdp netlink ({m})")


def _attach_tci(loaded: Loaded, at: Attachment) -> None:
    at.tci_link_fd = link_create(tc_ingress_fd(loaded), at.ifindex, BPF_TCX_INGRESS)
    at.how.append("tcx ingress link")


def _attach_auto(loaded: Loaded, at: Attachment, xdp_mode: str, allow_fallback: bool) -> None:
    """``ingress="auto"``: native XDP, else tcx ingress, else generic XDP (module docstring);
    XDP in ``xdp_mode`` when that is not auto."""
    if xdp_mode != "auto":
        _attach_xdp(loaded, at, xdp_mode, allow_fallback)
        return
    if driver_of(at.ifname) not in SKB_NATIVE_DRIVERS:
        try:
            _attach_xdp(loaded, at, "native", False)  # XdpBusy when the hook is held
            return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    try:
        _attach_tci(loaded, at)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        _attach_xdp(loaded, at, "generic", allow_fallback)


def tc_ingress_fd(loaded: Loaded) -> int:
    """The fd of ``fs_tc_ingress`` (loaded on first use unless loaded with the others)."""
    fd = getattr(loaded, "_tc_ingress_fd", None) or loaded.fds.get("fs_tc_ingress")
    if fd is None:
        fd = loaded.bpf.load_func(b"fs_tc_ingress", type(loaded.bpf).SCHED_CLS).fd
        loaded._tc_ingress_fd = fd
    return fd


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


def promiscuous(ifindex: int) -> socket.socket:
    """Promiscuous mode on ``ifindex`` for as long as the returned socket is open.

    A packet socket of protocol 0 receives nothing; its ``PACKET_MR_PROMISC`` membership
    raises the device's promiscuity count by one (as libpcap does for tcpdump or Zeek), and
    the kernel takes it back when the socket closes, however the process ends.
    """
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        # struct packet_mreq: ifindex, type, address length, address[8]
        s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                     struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
    except BaseException:
        s.close()
        raise
    return s


def attach(loaded: Loaded, ifname: str, xdp_mode: str = "generic", egress: bool = True,
           allow_fallback: bool = True, ingress: str = "xdp",
           promisc: bool = False) -> Attachment:
    """Attach the ingress program (XDP or tcx) and, unless ``egress=False``, TC (egress).

    Parameters
    ----------
    loaded : Loaded
        From :func:`flowscope.sensor.loader.load`.
    ifname : str
        Interface in the calling thread's network namespace.
    xdp_mode : {"auto", "generic", "native"}
        XDP attach mode (generic works on every device; native needs driver support; auto
        tries native, then generic, and takes generic at once on ``SKB_NATIVE_DRIVERS``).
        ``Attachment.xdp_mode`` tells which one was used.
    allow_fallback : bool
        Use netlink XDP / clsact TC when links are unsupported (those survive a SIGKILL).
    ingress : {"auto", "xdp", "tc", ""}
        How ingress is counted: the cheapest hook the interface has (module docstring),
        XDP, a tcx ingress link, or not at all.
    promisc : bool
        Hold the interface in promiscuous mode while attached (:func:`promiscuous`), so
        that a mirror port's frames for other hosts reach the hooks.

    Raises
    ------
    XdpBusy
        XDP was to be attached and another program holds the hook (it is left alone).

    Returns
    -------
    Attachment
        Call ``detach()`` (or use it as a context manager) to undo.
    """
    if xdp_mode != "auto":
        _xdp_flags(xdp_mode)  # ValueError for a bad mode before anything is attached
    at = Attachment(ifname=ifname, ifindex=ifindex_of(ifname), xdp_mode=xdp_mode,
                    ingress=ingress)
    try:
        if ingress == "auto":
            _attach_auto(loaded, at, xdp_mode, allow_fallback)
        elif ingress == "xdp":
            _attach_xdp(loaded, at, xdp_mode, allow_fallback)
        elif ingress == "tc":
            _attach_tci(loaded, at)
        elif ingress:
            raise ValueError(f"ingress must be 'auto', 'xdp', 'tc' or '', not {ingress!r}")
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
        if promisc:
            at.promisc = promiscuous(at.ifindex)
            at.how.append("promiscuous")
        at.offloads = offloads_on(ifname)
    except BaseException:
        at.detach()
        raise
    return at

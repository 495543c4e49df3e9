"""Compile and load the sensor's BPF programs with BCC, refusing layout mismatches.

The XDP (ingress) and TC (egress) programs are compiled as one BCC module so
they share their maps. BCC only rewrites map calls (``fs_flows.lookup(...)``)
in the main source text, so the local ``#include "fs_*.h"`` lines are inlined
here before compiling; system headers come from ``BCC_KERNEL_SOURCE`` (see
:mod:`flowscope.sensor.kinclude`) when the running kernel has no header package.
The C sources travel with the package (``flowscope/bpf``, a link to the
repository's ``bpf/`` that the wheel holds as files).

Layout check: every field offset and struct size of ``flowscope.sensor.layout``
is turned into a ``_Static_assert`` appended to the source, so a header that
drifts from its Python mirror fails to compile, and the map key/value sizes BCC
reports are compared with the dtypes after loading.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from . import kinclude, layout

#: The BPF C sources, installed with the package.
BPF_DIR = files("flowscope") / "bpf"

#: Keyword tunables accepted by :func:`load` -> the ``-D`` macro each sets.
TUNABLES = {
    "max_flows": "FS_MAX_FLOWS",
    "ring_pages": "FS_RING_PAGES",
    "frag_timeout_ns": "FS_FRAG_TIMEOUT_NS",
    "packet_events": "FS_PACKET_EVENTS",
    "precise_last_seen": "FS_PRECISE_LAST_SEEN",
    "atomic_counters": "FS_ATOMIC_COUNTERS",
    "tcp_seq": "FS_TCP_SEQ",
    "pull_bytes": "FS_PULL_BYTES",
    "max_l2_layers": "FS_MAX_L2_LAYERS",
    "max_mpls_labels": "FS_MAX_MPLS_LABELS",
    "max_ipv6_ext": "FS_MAX_IPV6_EXT",
    "filter": "FS_FILTER",
    "key_vlan": "FS_KEY_VLAN",
    "key_icmp": "FS_KEY_ICMP",
    "sample_rate": "FS_SAMPLE_RATE",
    "filter_cidrs_max": "FS_FLT_CIDRS_MAX",
    "dns": "FS_DNS",
    "drops": "FS_DROPS",
    "decapsulate": "FS_DECAP",
    "vxlan_port": "FS_VXLAN_PORT",
    "geneve_port": "FS_GENEVE_PORT",
}

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')

# bpf(2) on x86_64 / aarch64.
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_PROG_TEST_RUN = 10


class LayoutMismatch(RuntimeError):
    """The compiled structs differ from ``flowscope.sensor.layout``."""


def inline_sources(names, bpf_dir=BPF_DIR) -> str:
    """Concatenate ``names`` with their local ``#include "..."`` files inlined once each."""
    seen: set[str] = set()

    def one(name: str) -> str:
        if name in seen:
            return ""
        seen.add(name)
        out = []
        for line in (bpf_dir / name).read_text().splitlines(keepends=True):
            m = _INCLUDE_RE.match(line)
            out.append(one(m.group(1)) if m else line)
        return "".join(out)

    return "".join(one(n) for n in names)


def layout_asserts() -> str:
    """C ``_Static_assert`` lines pinning every offset and size of the Python mirror."""
    lines = []
    for cname, dt in layout.STRUCTS.items():
        lines.append(
            f"_Static_assert(sizeof(struct {cname}) == {dt.itemsize}, "
            f'"struct {cname}: size differs from flowscope.sensor.layout");'
        )
        for name, (sub, off) in dt.fields.items():
            lines.append(
                f"_Static_assert(__builtin_offsetof(struct {cname}, {name}) == {off}, "
                f'"struct {cname}.{name}: offset differs from flowscope.sensor.layout");'
            )
            lines.append(
                f"_Static_assert(sizeof(((struct {cname} *)0)->{name}) == {sub.itemsize}, "
                f'"struct {cname}.{name}: size differs from flowscope.sensor.layout");'
            )
    for ename, enum in layout.ENUMS.items():
        prefix = layout.ENUM_PREFIX[ename]
        for member in enum:
            lines.append(
                f"_Static_assert({prefix}{member.name} == {int(member.value)}, "
                f'"{prefix}{member.name} differs from flowscope.sensor.layout");'
            )
    lines.append(f'_Static_assert(FS_CNT_MAX == {layout.FS_CNT_MAX}, "FS_CNT_MAX");')
    for name, value in layout.DEFINES.items():
        lines.append(f'_Static_assert({name} == {value:#x}, "{name}");')
    return "\n".join(lines) + "\n"


def program_source() -> str:
    """The full text BCC compiles: both entry points, their headers, the layout asserts."""
    return inline_sources(["fs_xdp.c", "fs_tc.c", "fs_drops.c"]) + "\n" + layout_asserts()


def cflags_for(tunables: dict | None = None) -> list[str]:
    """``-D`` flags for the keyword tunables (see ``TUNABLES``)."""
    flags = []
    for k, v in (tunables or {}).items():
        if k not in TUNABLES:
            raise ValueError(f"unknown BPF tunable {k!r}; known: {sorted(TUNABLES)}")
        v = int(v)
        if v < 0:
            raise ValueError(f"BPF tunable {k} must be >= 0, got {v}")
        if k == "ring_pages" and (v == 0 or v & (v - 1)):
            raise ValueError(f"ring_pages must be a power of two, got {v}")
        flags.append(f"-D{TUNABLES[k]}={v}")
    return flags


def kernel_source_dir() -> str | None:
    """Directory for ``BCC_KERNEL_SOURCE``, preparing the include tree when needed.

    Returns the caller's ``BCC_KERNEL_SOURCE`` when set, None when the running
    kernel's own headers are installed (BCC's default), else the tree
    :func:`flowscope.sensor.kinclude.prepare` keeps in a cache directory.

    Raises
    ------
    flowscope.sensor.kinclude.KincludeError
        When the tree cannot be prepared (a RuntimeError; one-line message).
    """
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return os.environ["BCC_KERNEL_SOURCE"]
    if Path(f"/lib/modules/{os.uname().release}/build/include").is_dir():
        return None
    return str(kinclude.prepare())


def import_bcc():
    """Import BCC lazily (only the sensor needs it), with the kernel include dir set."""
    ksrc = kernel_source_dir()
    if ksrc:
        os.environ["BCC_KERNEL_SOURCE"] = ksrc
    import bcc  # noqa: PLC0415 - lazy by design

    return bcc


@dataclass
class Loaded:
    """A compiled module: the BCC object, program and map fds, and what built it."""

    bpf: object
    xdp_fd: int
    tc_fd: int
    flows_fd: int
    events_fd: int
    counters_fd: int
    cflags: list[str]
    source: str = field(repr=False)
    drops: bool = False  # the drop tracer is loaded (fds["fs_kfree_skb"]; attach_drops)
    drops_attached: bool = False
    drops_error: str = ""  # why the drop tracer asked for could not be loaded (one line)
    # loaded by a child process (``load_detached``; ``bpf`` is None): name -> fd of every
    # map and program, all owned by this object
    fds: dict = field(default_factory=dict, repr=False)
    bcc_version: str = ""

    def attach_drops(self) -> None:
        """Attach the drop tracer to the tracepoint skb:kfree_skb (detached with ``close`` or
        when the process ends)."""
        if self.drops and not self.drops_attached:
            self.fds["tp:kfree_skb"] = raw_tracepoint_open(self.fds["fs_kfree_skb"])
            self.drops_attached = True

    def map_fd(self, name: str) -> int:
        if self.bpf is None:
            return self.fds[name]
        return _map_fd(self.bpf, name)

    def close(self) -> None:
        """Release the programs and maps (detach first: links hold their own references)."""
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


def _map_fd(b, name: str) -> int:
    return b.get_table(name.encode()).get_fd()


def check_map_sizes(b) -> None:
    """Compare the key/value sizes BCC compiled with the dtypes; raise LayoutMismatch."""
    want = {
        "fs_flows": (layout.FLOW_KEY_DTYPE.itemsize, layout.FLOW_DTYPE.itemsize),
        "fs_counters": (4, 8),
        "fs_drop_counts": (layout.DROP_KEY_DTYPE.itemsize, 8),
    }
    for name, (ks, vs) in want.items():
        t = b.get_table(name.encode())
        # Per-CPU tables expose Leaf as ncpu x value; sLeaf is the single value.
        got = (ctypes.sizeof(t.Key), ctypes.sizeof(getattr(t, "sLeaf", t.Leaf)))
        if got != (ks, vs):
            raise LayoutMismatch(f"map {name}: compiled key/value sizes {got}, mirror {(ks, vs)}")


def build_cflags(tunables: dict | None = None) -> list[str]:
    """The tunables' ``-D`` flags, plus, with ``drops``, the ``struct sk_buff`` offsets of the
    running kernel the drop tracer reads (``btf.drop_tracer_cflags``; BtfError without BTF)."""
    flags = cflags_for(tunables)
    if (tunables or {}).get("drops"):
        from .btf import drop_tracer_cflags

        flags += drop_tracer_cflags()
    return flags


def load(tunables: dict | None = None, extra_cflags: list[str] | None = None,
         debug: int = 0) -> Loaded:
    """Compile and load both programs.

    Parameters
    ----------
    tunables : dict, optional
        Keyword tunables (``TUNABLES``), e.g. ``{"max_flows": 4096}``.
    extra_cflags : list of str, optional
        Raw extra compiler flags.
    debug : int
        BCC debug flags (e.g. 0x4 prints the compiled program).

    Raises
    ------
    LayoutMismatch
        When fs_shared.h and ``flowscope.sensor.layout`` disagree.
    """
    bcc = import_bcc()
    cflags = build_cflags(tunables) + list(extra_cflags or [])  # BtfError without BTF
    drops = bool((tunables or {}).get("drops"))
    tp_id = drop_tracepoint_id() if drops else 0
    src = program_source()
    try:
        b = bcc.BPF(text=src.encode(), cflags=cflags, debug=debug)
    except Exception as exc:  # BCC raises a bare Exception on compile errors
        raise LayoutMismatch(
            f"BPF compile failed ({exc}); if the messages above name "
            "flowscope.sensor.layout, fs_shared.h and its Python mirror disagree"
        ) from exc
    try:
        check_map_sizes(b)
        xdp = b.load_func(b"fs_xdp", bcc.BPF.XDP)
        tc = b.load_func(b"fs_tc", bcc.BPF.SCHED_CLS)
        if int((tunables or {}).get("decapsulate", 1)):
            load_decap(b, bcc)
        fds, error = {}, ""
        if drops:
            fd, error = _load_drop_tracer(b, tp_id)
            if fd is not None:
                fds["fs_kfree_skb"] = fd
        return Loaded(
            bpf=b,
            xdp_fd=xdp.fd,
            tc_fd=tc.fd,
            flows_fd=_map_fd(b, "fs_flows"),
            events_fd=_map_fd(b, "fs_events"),
            counters_fd=_map_fd(b, "fs_counters"),
            cflags=cflags,
            source=src,
            drops="fs_kfree_skb" in fds,
            drops_error=error,
            fds=fds,
        )
    except BaseException:
        b.cleanup()
        raise


# --- loading in a child process ----------------------------------------------

#: The version of the BCC that the last ``load_detached`` used (for the build_info metric).
BCC_VERSION = ""
#: The maps a sensor uses by name (the others are the programs' own).
SENSOR_MAPS = ("fs_flows", "fs_events", "fs_counters", "fs_watched", "fs_drop_counts",
               "fs_flt_ports", "fs_flt_protos", "fs_flt_cidr_in", "fs_flt_cidr_ex")
#: With decapsulation (FS_DECAP): the program arrays the entry points tail-call.
DECAP_MAPS = ("fs_xdp_progs", "fs_tc_progs")


def load_detached(tunables: dict | None = None, tc_ingress: bool = False) -> Loaded:
    """As :func:`load`, but BCC compiles and loads the programs in a child process that
    hands their fds and the maps' over a Unix socket and exits.

    This process never maps BCC, LLVM or clang (over 100 MiB resident once a compile has
    run in it). The child's compiler messages go to this process's stderr (fd 2).
    ``tc_ingress`` also loads ``fs_tc_ingress`` (``Loaded.fds["fs_tc_ingress"]``).

    Raises
    ------
    LayoutMismatch
        When the compile fails (the message is the child's first line).
    """
    import json  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    ksrc = kernel_source_dir()
    env = dict(os.environ)
    if ksrc:
        env["BCC_KERNEL_SOURCE"] = ksrc
    cflags = build_cflags(tunables)  # BtfError without BTF
    drops = bool((tunables or {}).get("drops"))
    src = program_source()
    decap = bool(int((tunables or {}).get("decapsulate", 1)))
    req = json.dumps({"source": src, "cflags": cflags,
                      "drops_btf_id": drop_tracepoint_id() if drops else 0,
                      "tc_ingress": tc_ingress, "decap": decap}).encode()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with mine:
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from flowscope.sensor.loader import _child_main; "
                 f"_child_main({theirs.fileno()})"],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=2, env=env)  # our stdout may carry the records
        fds: list[int] = []
        try:
            mine.sendall(req)
            mine.shutdown(socket.SHUT_WR)
            data = b""
            for _ in range(1 << 16):  # bounded: the reply is a few hundred bytes
                chunk, got, _flags, _addr = socket.recv_fds(mine, 1 << 16, 64)
                fds += got
                if not chunk:
                    break
                data += chunk
            proc.wait()
            reply = json.loads(data or b"{}")
        except BaseException:
            for fd in fds:
                os.close(fd)
            proc.kill()
            proc.wait()
            raise
    if not reply.get("ok"):
        for fd in fds:
            os.close(fd)
        raise LayoutMismatch(reply.get("error") or
                             f"BPF loader process exited with status {proc.returncode}")
    global BCC_VERSION
    BCC_VERSION = reply.get("bcc", "")
    named = dict(zip(reply["names"], fds))
    return Loaded(bpf=None, xdp_fd=named["fs_xdp"], tc_fd=named["fs_tc"],
                  flows_fd=named["fs_flows"], events_fd=named["fs_events"],
                  counters_fd=named["fs_counters"], cflags=cflags, source=src,
                  drops="fs_kfree_skb" in named, drops_error=reply.get("drops_error", ""),
                  fds=named, bcc_version=reply.get("bcc", ""))


def _child_main(sock_fd: int) -> None:
    """The child of :func:`load_detached`: compile, load, send the fds, exit."""
    import json  # noqa: PLC0415
    import socket  # noqa: PLC0415

    sock = socket.socket(fileno=sock_fd)
    data = b""
    for _ in range(1 << 20):  # bounded: until the parent shuts its side
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    req = json.loads(data)
    try:
        bcc = import_bcc()
        b = bcc.BPF(text=req["source"].encode(), cflags=req["cflags"])
        check_map_sizes(b)
        progs = [("fs_xdp", bcc.BPF.XDP), ("fs_tc", bcc.BPF.SCHED_CLS)]
        if req["tc_ingress"]:
            progs.append(("fs_tc_ingress", bcc.BPF.SCHED_CLS))
        names, fds = [], []
        for name, kind in progs:
            names.append(name)
            fds.append(b.load_func(name.encode(), kind).fd)
        drops_error = ""
        if req["drops_btf_id"]:
            fd, drops_error = _load_drop_tracer(b, req["drops_btf_id"])
            if fd is not None:
                fds.append(fd)
                names.append("fs_kfree_skb")
        maps = SENSOR_MAPS
        if req["decap"]:
            # the program arrays' entries live as long as a process holds the arrays: the
            # sensor keeps their fds
            load_decap(b, bcc)
            maps += DECAP_MAPS
        for name in maps:
            names.append(name)
            fds.append(_map_fd(b, name))
        reply = {"ok": True, "names": names, "bcc": str(getattr(bcc, "__version__", "")),
                 "drops_error": drops_error}
    except Exception as exc:  # noqa: BLE001 - BCC raises a bare Exception; reported as one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reply = {"ok": False, "error": f"BPF compile failed ({first}); if the messages above "
                 "name flowscope.sensor.layout, fs_shared.h and its Python mirror disagree"}
        fds = []
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    sock.close()


BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
#: the tracepoint the drop tracer runs on
DROP_TRACEPOINT = "kfree_skb"


class _RawTpAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32), ("cookie", ctypes.c_uint64)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


def raw_tracepoint_open(prog_fd: int) -> int:
    """Attach a BTF-typed tracepoint program to the tracepoint it was loaded for (no name);
    returns the fd (a link) that keeps it attached."""
    return bpf_syscall(BPF_RAW_TRACEPOINT_OPEN, _RawTpAttr(name=0, prog_fd=prog_fd))


def drop_tracepoint_id() -> int:
    """BTF type id the drop tracer is loaded against (``btf_trace_kfree_skb``); BtfError
    without BTF or without that tracepoint."""
    from .btf import vmlinux  # noqa: PLC0415

    return vmlinux().tracepoint_id(DROP_TRACEPOINT)


#: the drop tracer's builds, in the order tried (bpf/fs_drops.c): packet bytes loaded through
#: skb->head (kernels >= 6.17), then copied with bpf_probe_read_kernel
DROP_TRACERS = ("fs_kfree_skb", "fs_kfree_skb_probe")


def _load_drop_tracer(b, btf_id: int) -> tuple[int | None, str]:
    """The drop tracer of the compiled module ``b``, loaded typed: ``(fd, "")`` for the
    first build of ``DROP_TRACERS`` the kernel takes (its program name says which), or
    ``(None, why)`` when it refuses both (the sensor then runs without it; ``why`` is the
    last build's refusal)."""
    why = ""
    for name in DROP_TRACERS:
        try:
            return load_tp_btf(b.dump_func(name.encode()), name, btf_id), ""
        except OSError as exc:
            why = str(exc)
    return None, why


def load_tp_btf(insns: bytes, name: str, btf_id: int) -> int:
    """Load compiled instructions (map fds already in place, as BCC's ``dump_func`` gives
    them) as a BTF-typed tracepoint program (``tp_btf``) for the tracepoint whose
    ``btf_trace_*`` typedef is ``btf_id``; returns its fd.

    BCC loads only raw tracepoints, whose arguments are plain numbers: every read through
    them is a helper call. Typed, the verifier lets the program load struct members
    directly. OSError names the verifier's last line on failure.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=len(insns) // 8,
                         insns=ctypes.addressof(code), license=ctypes.addressof(lic),
                         prog_name=name.encode()[:15], expected_attach_type=BPF_TRACE_RAW_TP,
                         attach_btf_id=btf_id)
    try:
        return bpf_syscall(BPF_PROG_LOAD, attr)
    except OSError as exc:
        log = ctypes.create_string_buffer(1 << 20)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            fd = bpf_syscall(BPF_PROG_LOAD, attr)
        except OSError:
            lines = [ln for ln in log.value.decode(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith(("processed ", "verification time"))]
            raise OSError(exc.errno, f"loading {name}: {os.strerror(exc.errno)}"
                          + (f" ({lines[-1].strip()})" if lines else "")) from None
        return fd  # passed with the log on: a transient failure


def load_decap(b, bcc) -> None:
    """Load the decapsulation programs (FS_DECAP) and put them in the program arrays the
    entry points tail-call (``fs_xdp_progs``, ``fs_tc_progs``: FS_PROG_OUTER 0, FS_PROG_DECAP
    1, FS_PROG_INNER 2).
    """
    for kind, prog_type in ((b"xdp", bcc.BPF.XDP), (b"tc", bcc.BPF.SCHED_CLS)):
        progs = b[b"fs_" + kind + b"_progs"]
        for idx, name in enumerate((b"outer", b"decap", b"inner")):
            fn = b.load_func(b"fs_" + kind + b"_" + name, prog_type)
            progs[ctypes.c_int(idx)] = ctypes.c_int(fn.fd)


# --- bpf(2) helpers ----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


def bpf_syscall(cmd: int, attr: ctypes.Structure) -> int:
    """Raw ``bpf(cmd, &attr, sizeof attr)``; raises OSError on failure."""
    r = _libc.syscall(_NR_BPF, ctypes.c_int(cmd), ctypes.byref(attr),
                      ctypes.c_uint(ctypes.sizeof(attr)))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return r


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run a program once (or ``repeat`` times) on ``frame`` with BPF_PROG_TEST_RUN.

    Returns ``(retval, duration)``, duration being the kernel-reported mean ns per run.
    Maps are updated as for a real packet. TC programs need frames >= 14 bytes.
    """
    buf = ctypes.create_string_buffer(bytes(frame), len(frame))
    out = ctypes.create_string_buffer(len(frame) + 512)
    a = _TestRunAttr()
    a.prog_fd = prog_fd
    a.data_size_in = len(frame)
    a.data_in = ctypes.addressof(buf)
    a.data_size_out = len(out)
    a.data_out = ctypes.addressof(out)
    a.repeat = repeat
    bpf_syscall(BPF_PROG_TEST_RUN, a)
    return a.retval, a.duration


def frame_array(frame: bytes) -> np.ndarray:
    """``frame`` as a uint8 array (convenience for comparing with the offline parser)."""
    return np.frombuffer(bytes(frame), dtype=np.uint8)

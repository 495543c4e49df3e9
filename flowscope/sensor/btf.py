"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``): struct member offsets and enums.

The drop tracer (``bpf/fs_drops.c``) reads ``struct sk_buff`` fields of a kernel
built without headers here, so their offsets come from the kernel's own type
information at load time and reach the program as ``-D`` flags; the names of
``enum skb_drop_reason`` (which differ between kernel versions) come from the same
place. A small reader of the BTF format (``Documentation/bpf/btf.rst``): no bpftool.
"""

from __future__ import annotations

import struct
from functools import lru_cache

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
# kinds
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST = range(1, 11)
_RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(
    11, 20)


class BtfError(Exception):
    """The BTF is missing or not understood (one line)."""


class Btf:
    """Types of one BTF blob: ``struct_member_offset`` and ``enum_values``."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF: too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data)
        if magic != _MAGIC:
            raise BtfError("BTF: bad magic (not a little-endian BTF blob)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        base = hdr_len
        self._str = data[base + str_off: base + str_off + str_len]
        self.types: list = [None]  # type id 0 is void
        self.by_name: dict[tuple[int, str], int] = {}
        pos, end = base + type_off, base + type_off + type_len
        while pos < end:
            name_off, info, size = struct.unpack_from("<III", data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kflag = info >> 31
            extra = None
            if kind == _INT or kind == _VAR or kind == _DECL_TAG:
                pos += 4
            elif kind == _ARRAY:
                pos += 12
            elif kind in (_STRUCT, _UNION):
                extra = [struct.unpack_from("<III", data, pos + 12 * k) for k in range(vlen)]
                pos += 12 * vlen
            elif kind == _ENUM:
                extra = [struct.unpack_from("<Ii", data, pos + 8 * k) for k in range(vlen)]
                pos += 8 * vlen
            elif kind == _ENUM64:
                extra = [struct.unpack_from("<III", data, pos + 12 * k) for k in range(vlen)]
                pos += 12 * vlen
            elif kind == _FUNC_PROTO:
                pos += 8 * vlen
            elif kind == _DATASEC:
                pos += 12 * vlen
            elif kind not in (_PTR, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _FUNC,
                              _FLOAT, _TYPE_TAG):
                raise BtfError(f"BTF: unknown type kind {kind}")
            tid = len(self.types)
            self.types.append((kind, name_off, size, kflag, extra))
            if name_off:
                self.by_name.setdefault((kind, self.name(name_off)), tid)

    def name(self, off: int) -> str:
        e = self._str.index(b"\0", off)
        return self._str[off:e].decode("ascii", "replace")

    def _resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(32):
            kind, _n, size, _k, _e = self.types[tid]
            if kind in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
                tid = size  # the 'type' field shares the slot with 'size'
                continue
            return tid
        raise BtfError("BTF: typedef chain too long")

    def _find(self, tid: int, member: str, base: int):
        kind, _n, _size, kflag, members = self.types[tid]
        for name_off, mtype, off in members:
            bits = off & 0xFFFFFF if kflag else off
            at = base + bits // 8
            if name_off and self.name(name_off) == member:
                return at, self._resolve(mtype)
            if not name_off:
                inner = self._resolve(mtype)
                if self.types[inner][0] in (_STRUCT, _UNION):
                    got = self._find(inner, member, at)
                    if got is not None:
                        return got
        return None

    def member_offset(self, struct_name: str, member: str) -> tuple[int, int]:
        """``(byte offset, size)`` of ``struct_name.member`` (anonymous members searched)."""
        tid = self.by_name.get((_STRUCT, struct_name))
        if tid is None:
            raise BtfError(f"BTF: no struct {struct_name}")
        got = self._find(tid, member, 0)
        if got is None:
            raise BtfError(f"BTF: struct {struct_name} has no member {member}")
        at, mt = got
        kind, _n, size, _k, _e = self.types[mt]
        return at, (8 if kind == _PTR else size)

    def tracepoint_id(self, tracepoint: str) -> int:
        """Type id of ``btf_trace_<tracepoint>``, the typedef a BTF-typed tracepoint program
        is loaded against (its arguments' types)."""
        tid = self.by_name.get((_TYPEDEF, f"btf_trace_{tracepoint}"))
        if tid is None:
            raise BtfError(f"BTF: no tracepoint {tracepoint}")
        return tid

    def enum_values(self, enum_name: str) -> dict[int, str]:
        """Value -> name of every member of ``enum enum_name``."""
        tid = self.by_name.get((_ENUM, enum_name)) or self.by_name.get((_ENUM64, enum_name))
        if tid is None:
            raise BtfError(f"BTF: no enum {enum_name}")
        kind, _n, _s, _k, members = self.types[tid]
        if kind == _ENUM:
            return {v: self.name(n) for n, v in members}
        return {lo | hi << 32: self.name(n) for n, lo, hi in members}


@lru_cache(maxsize=1)
def vmlinux() -> Btf:
    """The running kernel's BTF (read once)."""
    try:
        with open(VMLINUX, "rb") as f:
            return Btf(f.read())
    except OSError as exc:
        raise BtfError(f"{VMLINUX}: {exc.strerror}") from None


#: ``struct sk_buff`` / ``struct net_device`` members the drop tracer reads -> -D name.
SKB_FIELDS = {("sk_buff", "head"): "FS_SKB_HEAD", ("sk_buff", "dev"): "FS_SKB_DEV",
              ("sk_buff", "network_header"): "FS_SKB_NETWORK_HEADER",
              ("sk_buff", "transport_header"): "FS_SKB_TRANSPORT_HEADER",
              ("net_device", "ifindex"): "FS_NETDEV_IFINDEX"}
#: Drop reasons that are no loss -> -D name (-1 when the kernel has no such reason): a frame
#: addressed to another host (a mirror port, a promiscuous link) is freed with these.
NOT_LOST = {"OTHERHOST": "FS_DROP_OTHERHOST",
            "IPV6_NDISC_NS_OTHERHOST": "FS_DROP_NS_OTHERHOST"}


def drop_tracer_cflags(btf: Btf | None = None) -> list[str]:
    """``-D`` flags with the member offsets (and sizes, checked) the drop tracer needs, and the
    values of the reasons it skips (``NOT_LOST``)."""
    btf = btf or vmlinux()
    out = []
    want = {"head": 8, "dev": 8, "network_header": 2, "transport_header": 2, "ifindex": 4}
    for (sname, member), macro in SKB_FIELDS.items():
        off, size = btf.member_offset(sname, member)
        if size != want[member]:
            raise BtfError(f"BTF: {sname}.{member} is {size} bytes, expected {want[member]}")
        out.append(f"-D{macro}={off}")
    value = {n: v for v, n in drop_reason_names(btf).items()}
    out += [f"-D{macro}={value.get(name, -1)}" for name, macro in NOT_LOST.items()]
    return out


def drop_reason_names(btf: Btf | None = None) -> dict[int, str]:
    """``enum skb_drop_reason`` value -> name without its ``SKB_DROP_REASON_`` prefix (the
    names the ``skb:kfree_skb`` tracepoint prints); {} when the kernel has no such enum."""
    try:
        vals = (btf or vmlinux()).enum_values("skb_drop_reason")
    except BtfError:
        return {}
    return {v: (n[len("SKB_DROP_REASON_"):] if n.startswith("SKB_DROP_REASON_") else n)
            for v, n in vals.items()}

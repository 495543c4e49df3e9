"""Kernel records -> engine rows: ring events and map entries as ``ROW_DTYPE`` rows.

Ring events become rows flagged ``PF_ABS`` (packets whose ``cnt_*`` are the
flow's absolute counters after them); map entries become ``PF_SYNC`` rows (no
packet: the flow's counters and last-seen time). The engine handles both in
one place (``flowscope._kernels.engine._set_kernel_counters``).
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from .._kernels.dns import parse_dns_payloads
from . import layout as SL


def rows_from_events(ev: np.ndarray, offset_ns: int, slots: dict[int, int]) -> np.ndarray:
    """``event_rows`` as one ``PKT_DTYPE`` array (the query names in the rows)."""
    return L.join_rows(*event_rows(ev, offset_ns, slots))


def event_rows(ev: np.ndarray, offset_ns: int,
               slots: dict[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Ring events (``sensor.layout.RECORD_DTYPE`` or ``EVENT_DTYPE``) -> ``ROW_DTYPE`` rows
    with PF_ABS, and their DNS name array (None when no record carries a DNS message).
    The payload bytes of FS_EVR_DNS records go through the offline DNS parser.

    ``offset_ns`` turns CLOCK_MONOTONIC into wall time; ``slots`` maps ifindex
    -> the ``iface`` value (position of the interface on the command line).
    """
    n = len(ev)
    rows = np.zeros(n, dtype=L.ROW_DTYPE)
    if n == 0:
        return rows, None
    k = ev["key"]
    rev = ev["dir"] == SL.Dir.REV
    rows["ts"] = ev["ts_ns"].astype(np.int64) + offset_ns
    rows["caplen"] = ev["frame_len"]
    rows["wirelen"] = ev["frame_len"]
    _endpoints(rows, k, rev)
    for f in ("seq", "ack", "payload_len", "window", "tcp_flags", "icmp_type", "icmp_code"):
        rows[f] = ev[f]
    # the kernel's FS_PF_* bits have the values of layout.PF_*
    rows["pflags"] = ev["pflags"] | L.PF_ABS
    rows["ip_len"] = ev["ip_len"]
    rows["first_ts"] = ev["first_ns"].astype(np.int64) + offset_ns
    rows["kstate"] = ev["state"]
    # context: the hooks see Ethernet frames; a decapsulated packet has its own Ethernet
    # header, or none (IP in IP, GTP, ...)
    depth = ev["tun_depth"]
    rows["pflags"] |= np.where((depth == 0) | (ev["tun_ether"] != 0), L.PF_MAC, 0).astype(np.uint8)
    rows["smac"] = ev["smac"]
    rows["dmac"] = ev["dmac"]
    rows["vlan"] = ev["vlan"][:, 0]
    rows["vlan_inner"] = ev["vlan"][:, 1]
    rows["nvlan"] = ev["nvlan"]
    if slots:
        idx = ev["ifindex"]
        iface = np.zeros(n, dtype=np.uint16)
        for ifindex, slot in slots.items():
            iface[idx == ifindex] = slot
        rows["iface"] = iface
    _counters(rows, ev)
    names = None
    if "dns_len" in ev.dtype.names:
        dns = np.flatnonzero(ev["reason"] & SL.EventReason.DNS)
        if len(dns):
            names = L.name_array(n)
            parse_dns_payloads(ev["dns"], ev["dns_len"].astype(np.int64),
                               (ev["pflags"] & L.PF_TCP) != 0, rows, names, dns)
    # tunnels
    rows["tun_type"] = ev["tun_type"]
    rows["tun_depth"] = depth
    rows["tun_key"] = ev["tun_key"]
    return _with_parents(rows, names, ev)


def _with_parents(rows: np.ndarray, names: np.ndarray | None,
                  ev: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``rows`` (and ``names``) with a PERR_TUN_PARENT row before each decapsulated packet's
    row: its parent flow (the event's ``tun_parent`` key), which the engine links it to."""
    inner = np.flatnonzero(ev["tun_depth"] > 0)
    if len(inner) == 0:
        return rows, names
    par = np.zeros(len(inner), dtype=L.ROW_DTYPE)
    par["ts"] = rows["ts"][inner]
    _endpoints(par, ev["tun_parent"][inner], np.zeros(len(inner), dtype=bool))
    par["pflags"] = L.PF_PORTS  # the kernel's key: ports 0 where the protocol has none
    par["error"] = L.PERR_TUN_PARENT
    par["tun_depth"] = ev["tun_depth"][inner] - 1
    out = np.zeros(len(rows) + len(inner), dtype=L.ROW_DTYPE)
    at = np.arange(len(rows)) + np.cumsum(ev["tun_depth"] > 0)
    out[at] = rows
    out[at[inner] - 1] = par
    out_names = None
    if names is not None:  # parent rows carry no name (dns_qlen 0)
        out_names = L.name_array(len(out))
        out_names[at] = names
    return out, out_names


def _endpoints(rows, keys, rev):
    """Addresses, ports, l3 and protocol of canonical keys, oriented src -> dst (``rev``:
    the row travels b -> a)."""
    for s, d in (("src", "a"), ("dst", "b")):
        o = "b" if d == "a" else "a"
        rows[f"{s}_hi"] = np.where(rev, keys[f"{o}_hi"], keys[f"{d}_hi"])
        rows[f"{s}_lo"] = np.where(rev, keys[f"{o}_lo"], keys[f"{d}_lo"])
    rows["sport"] = np.where(rev, keys["port_b"], keys["port_a"])
    rows["dport"] = np.where(rev, keys["port_a"], keys["port_b"])
    rows["l3"] = keys["l3"]
    rows["proto"] = keys["proto"]
    # key_vlan: the key's VLAN id keys the row like the kernel (0 otherwise)
    rows["vlan"] = keys["vlan"]
    rows["nvlan"] = keys["vlan"] != 0


def _counters(rows, src):
    """The flow's per-orientation totals, from ring events or map values."""
    for name, field in (("pkts", "pkts"), ("bytes", "bytes"), ("pay", "payload"),
                        ("ipb", "ip_bytes")):
        rows[f"cnt_{name}0"] = src[field][:, 0]
        rows[f"cnt_{name}1"] = src[field][:, 1]
    flags = src["flags_or"] if "flags_or" in src.dtype.names else src["tcp_flags"]
    rows["cnt_flags0"] = flags[:, 0]
    rows["cnt_flags1"] = flags[:, 1]
    # tcpperf: the kernel's sequence tracking (the engine's _set_kernel_seq)
    for name, field in (("sq_start", "seq_start"), ("sq_high", "seq_high"),
                        ("sq_acked", "seq_acked"), ("rtx", "rtx_pkts"), ("ooo", "ooo_pkts"),
                        ("zw", "zero_win"), ("rtxb", "rtx_bytes")):
        rows[f"{name}0"] = src[field][:, 0]
        rows[f"{name}1"] = src[field][:, 1]
    rows["sq_flags"] = src["seq_flags"] & (L.SQF_INIT0 | L.SQF_INIT1 | L.SQF_FIN0 | L.SQF_FIN1)
    rows["drops0"] = src["drops"][:, 0]
    rows["drops1"] = src["drops"][:, 1]
    rows["drop_reason"] = src["drop_reason"]


def sync_rows(keys: np.ndarray, vals: np.ndarray, offset_ns: int,
              last_ns: np.ndarray | None = None) -> np.ndarray:
    """Map entries (``FLOW_KEY_DTYPE``, ``FLOW_DTYPE``) -> PF_SYNC rows (``ROW_DTYPE``;
    no DNS query names, so ``FlowTracker.process`` takes them without a name array).

    Each row is oriented like the flow's first packet (so a flow the engine
    does not hold is created with the kernel's initiator); ``last_ns``
    overrides the entries' last-seen times (monotonic ns).
    """
    n = len(keys)
    rows = np.zeros(n, dtype=L.ROW_DTYPE)
    if n == 0:
        return rows
    rev = vals["first_dir"] == SL.Dir.REV
    last = vals["last_ns"].astype(np.int64) if last_ns is None else last_ns
    rows["ts"] = last + offset_ns
    rows["first_ts"] = vals["first_ns"].astype(np.int64) + offset_ns
    _endpoints(rows, keys, rev)
    # ports as keyed by the kernel (0 for ICMP and fragments) give the same engine key
    rows["pflags"] = L.PF_SYNC | L.PF_PORTS
    rows["kstate"] = vals["state"]  # Closed/Reset here: the engine ends the flow (lost event)
    _counters(rows, vals)
    return rows


def key_bytes(keys: np.ndarray) -> list[bytes]:
    """Each ``FLOW_KEY_DTYPE`` key as bytes (hashable, for sets of keys)."""
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), SL.FLOW_KEY_DTYPE.itemsize)
    return [bytes(r) for r in raw]

"""Flow keys and the extractors that make them: FiveTuple, IpPair, MacPair.

An extractor decides what a flow is. The engine works on keys packed as
``layout.KEY_WORDS`` uint64 words; the classes here name the extractor for
the engine (``kind``) and turn packed words back into readable keys.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from . import layout
from .events import L4Proto, Orientation, TcpInfo

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True, order=True)
class FiveTupleKey:
    """proto + endpoints a and b; bidirectional keys have (a_addr, a_port) <= (b_addr, b_port)."""

    proto: int
    a_addr: IPAddress
    a_port: int
    b_addr: IPAddress
    b_port: int

    @property
    def l4(self) -> L4Proto:
        return L4Proto(self.proto)

    def __str__(self) -> str:
        return f"{L4Proto(self.proto).slug} {_ep(self.a_addr, self.a_port)} <-> {_ep(self.b_addr, self.b_port)}"


@dataclass(frozen=True, slots=True, order=True)
class IpPairKey:
    """Sorted address pair (a <= b); no ports, no protocol."""

    a: IPAddress
    b: IPAddress

    def __str__(self) -> str:
        return f"{self.a} <-> {self.b}"


@dataclass(frozen=True, slots=True, order=True)
class MacPairKey:
    """Sorted MAC pair (a <= b), as lower-case colon-separated strings."""

    a: str
    b: str

    def __str__(self) -> str:
        return f"{self.a} <-> {self.b}"


def _ep(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def words_to_ip(l3: int, hi: int, lo: int) -> IPAddress:
    if l3 == layout.L3_IPV4:
        return ipaddress.IPv4Address(lo & 0xFFFFFFFF)
    return ipaddress.IPv6Address((hi << 64) | lo)


def mac_str(v: int) -> str:
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


@dataclass(frozen=True, slots=True)
class Extracted:
    """What an extractor takes from one packet."""

    key: Any
    orientation: Orientation
    l4: L4Proto
    tcp: Optional[TcpInfo]


class Extractor:
    """Base class: ``kind`` selects the engine's key rule."""

    kind: int = layout.EXTRACT_FIVE_TUPLE
    name: str = ""

    def decode(self, words: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, view) -> Optional[Extracted]:
        """Key, orientation, L4 protocol and TCP facts of one ``PacketView``.

        Returns None for a packet this extractor does not match (the tracker
        counts those as unmatched). Uses the same parser and key rule as the
        engine.
        """
        from ._kernels.engine import extract_key
        from .pcap import parse_bytes

        pkts = parse_bytes(view.frame, view.timestamp.to_ns(), view.linktype)
        ok, k0, k1, k2, k3, k4, rev = extract_key(pkts, 0, self.kind)
        if not ok:
            return None
        p = pkts[0]
        tcp = None
        if p["pflags"] & layout.PF_TCP and self.kind in (
                layout.EXTRACT_FIVE_TUPLE, layout.EXTRACT_FIVE_TUPLE_DIRECTIONAL):
            tcp = TcpInfo(int(p["tcp_flags"]), int(p["seq"]), int(p["ack"]),
                          int(p["payload_off"]), int(p["payload_len"]), int(p["window"]))
        proto = int(p["proto"]) if p["l3"] in (layout.L3_IPV4, layout.L3_IPV6) else 0
        return Extracted(self.decode((k0, k1, k2, k3, k4)), orientation(rev), L4Proto(proto), tcp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class FiveTuple(Extractor):
    """(proto, address, port) pairs; bidirectional unless made with ``directional()``."""

    def __init__(self, directional: bool = False):
        self.kind = (
            layout.EXTRACT_FIVE_TUPLE_DIRECTIONAL if directional else layout.EXTRACT_FIVE_TUPLE
        )
        self.name = "directional" if directional else "bidirectional"

    @classmethod
    def bidirectional(cls) -> "FiveTuple":
        return cls(False)

    @classmethod
    def directional(cls) -> "FiveTuple":  # type: ignore[override]
        return cls(True)

    @property
    def is_directional(self) -> bool:
        return self.kind == layout.EXTRACT_FIVE_TUPLE_DIRECTIONAL

    def decode(self, words: Any) -> FiveTupleKey:
        _kind, l3, proto, port_a, port_b = layout.unpack_meta(words[4])
        return FiveTupleKey(
            proto,
            words_to_ip(l3, int(words[0]), int(words[1])),
            port_a,
            words_to_ip(l3, int(words[2]), int(words[3])),
            port_b,
        )


class IpPair(Extractor):
    """Sorted (address, address): every protocol between two hosts is one flow."""

    kind = layout.EXTRACT_IP_PAIR
    name = "ip-pair"

    def decode(self, words: Any) -> IpPairKey:
        l3 = layout.unpack_meta(words[4])[1]
        return IpPairKey(
            words_to_ip(l3, int(words[0]), int(words[1])),
            words_to_ip(l3, int(words[2]), int(words[3])),
        )


class MacPair(Extractor):
    """Sorted (MAC, MAC) of Ethernet frames; frames without a full Ethernet header are unmatched."""

    kind = layout.EXTRACT_MAC_PAIR
    name = "mac-pair"

    def decode(self, words: Any) -> MacPairKey:
        return MacPairKey(mac_str(int(words[1])), mac_str(int(words[3])))


def orientation(rev: int) -> Orientation:
    return Orientation.Reverse if rev else Orientation.Forward

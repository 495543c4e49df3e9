"""Flow event types and the small value types they carry.

Names follow the reference semantics (``../shared/spec/semantics.md``):
``Timestamp``, ``Orientation``, ``FlowSide``, ``L4Proto``, ``TcpInfo``,
``FlowState``, ``EndReason``, ``FlowStats``, ``HistoryString`` and the five
events ``Started``, ``Packet``, ``Established``, ``StateChange``, ``Ended``
(also reachable as ``FlowEvent.Started`` and so on). Slugs (``.slug``) are
the stable strings used in every output format; they never change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import layout

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """A packet time: seconds and nanoseconds since the Unix epoch."""

    sec: int = 0
    nsec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> "Timestamp":
        s, n = divmod(int(ns), NS_PER_S)
        return cls(s, n)

    @classmethod
    def from_float(cls, seconds: float) -> "Timestamp":
        return cls.from_ns(round(seconds * NS_PER_S))

    def to_ns(self) -> int:
        return self.sec * NS_PER_S + self.nsec

    def __float__(self) -> float:
        return self.sec + self.nsec / NS_PER_S

    def __str__(self) -> str:
        return f"{self.sec}.{self.nsec:09}"


class Orientation(enum.IntEnum):
    """Direction of a packet relative to its key: a -> b is Forward."""

    Forward = 0
    Reverse = 1


class FlowSide(enum.IntEnum):
    """Initiator = the orientation of the flow's first packet."""

    Initiator = 0
    Responder = 1

    @property
    def slug(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class L4Proto:
    """Transport protocol by IP protocol number (``L4Proto.Tcp``, ``L4Proto.Other(47)``)."""

    number: int

    _SLUGS: ClassVar[dict[int, str]] = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}
    _NAMES: ClassVar[dict[int, str]] = {6: "Tcp", 17: "Udp", 1: "Icmp", 58: "IcmpV6", 132: "Sctp"}

    @property
    def slug(self) -> str:
        return self._SLUGS.get(self.number, "other")

    @property
    def name(self) -> str:
        return self._NAMES.get(self.number, f"Other({self.number})")

    @staticmethod
    def Other(number: int) -> "L4Proto":  # noqa: N802 - mirrors the reference's variant name
        return L4Proto(int(number))

    def __repr__(self) -> str:
        return f"L4Proto.{self.name}"


L4Proto.Tcp = L4Proto(6)  # type: ignore[attr-defined]
L4Proto.Udp = L4Proto(17)  # type: ignore[attr-defined]
L4Proto.Icmp = L4Proto(1)  # type: ignore[attr-defined]
L4Proto.IcmpV6 = L4Proto(58)  # type: ignore[attr-defined]
L4Proto.Sctp = L4Proto(132)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """TCP header facts of one packet (host byte order)."""

    flags: int
    seq: int
    ack: int
    payload_offset: int
    payload_len: int
    window: int

    FIN: ClassVar[int] = 0x01
    SYN: ClassVar[int] = 0x02
    RST: ClassVar[int] = 0x04
    PSH: ClassVar[int] = 0x08
    ACK: ClassVar[int] = 0x10
    URG: ClassVar[int] = 0x20
    ECE: ClassVar[int] = 0x40
    CWR: ClassVar[int] = 0x80


_STATE_SLUGS = (
    "active", "syn_sent", "syn_received", "established", "fin_wait", "closing", "closed",
    "reset", "aborted",
)


class FlowState(enum.IntEnum):
    """TCP session state (every non-TCP flow stays Active)."""

    Active = layout.ST_ACTIVE
    SynSent = layout.ST_SYN_SENT
    SynReceived = layout.ST_SYN_RECEIVED
    Established = layout.ST_ESTABLISHED
    FinWait = layout.ST_FIN_WAIT
    ClosingTcp = layout.ST_CLOSING_TCP
    Closed = layout.ST_CLOSED
    Reset = layout.ST_RESET
    Aborted = layout.ST_ABORTED

    @property
    def slug(self) -> str:
        return _STATE_SLUGS[self.value]

    @property
    def is_terminal(self) -> bool:
        return self in (FlowState.Closed, FlowState.Reset, FlowState.Aborted)


_REASON_SLUGS = ("fin", "rst", "idle_timeout", "evicted", "shutdown")


class EndReason(enum.IntEnum):
    """Why a flow ended. ``Shutdown``: still open at the end of input / sensor stop."""

    Fin = layout.END_FIN
    Rst = layout.END_RST
    IdleTimeout = layout.END_IDLE
    Evicted = layout.END_EVICTED
    Shutdown = layout.END_SHUTDOWN

    @property
    def slug(self) -> str:
        return _REASON_SLUGS[self.value]


class HistoryString(str):
    """Connection history: S, F, R, D per packet (lower case = responder), at most 16."""

    MAX = layout.HISTORY_MAX

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class FlowStats:
    """Per-side totals of one flow; bytes are whole frame lengths."""

    initiator_packets: int = 0
    responder_packets: int = 0
    initiator_bytes: int = 0
    responder_bytes: int = 0
    started: Timestamp = field(default_factory=Timestamp)
    last_seen: Timestamp = field(default_factory=Timestamp)
    initiator_payload_bytes: int = 0
    responder_payload_bytes: int = 0
    initiator_tcp_flags: int = 0
    responder_tcp_flags: int = 0

    @property
    def packets(self) -> int:
        return self.initiator_packets + self.responder_packets

    @property
    def bytes(self) -> int:
        return self.initiator_bytes + self.responder_bytes

    @property
    def duration(self) -> float:
        return (self.last_seen.to_ns() - self.started.to_ns()) / NS_PER_S


class FlowEvent:
    """Base of the five event kinds; ``key()`` returns the flow key."""

    __slots__ = ()
    kind: ClassVar[str] = ""
    flow_key: Any
    ts: Timestamp

    def key(self) -> Any:
        return self.flow_key


@dataclass(frozen=True, slots=True)
class Started(FlowEvent):
    """A new flow; ``side`` is the side of its first packet."""

    flow_key: Any
    side: FlowSide
    ts: Timestamp
    l4: L4Proto
    kind: ClassVar[str] = "started"


@dataclass(frozen=True, slots=True)
class Packet(FlowEvent):
    """One packet of a flow (``len`` = frame length)."""

    flow_key: Any
    side: FlowSide
    len: int
    ts: Timestamp
    kind: ClassVar[str] = "packet"


@dataclass(frozen=True, slots=True)
class Established(FlowEvent):
    """The TCP handshake completed."""

    flow_key: Any
    ts: Timestamp
    kind: ClassVar[str] = "established"


@dataclass(frozen=True, slots=True)
class StateChange(FlowEvent):
    """A TCP state transition other than the first entry into Established."""

    flow_key: Any
    from_state: FlowState
    to_state: FlowState
    ts: Timestamp
    kind: ClassVar[str] = "state_change"


@dataclass(frozen=True, slots=True)
class Ended(FlowEvent):
    """The flow is over; ``ts`` is the time it was ended (packet or sweep time).

    ``initiator`` is the orientation of the initiator's packets relative to the
    key (Forward: the initiator is endpoint a); ``state`` is the final state.
    """

    flow_key: Any
    reason: EndReason
    stats: FlowStats
    history: HistoryString
    ts: Timestamp = field(default_factory=Timestamp)
    state: FlowState = FlowState.Active
    flow_id: int = 0
    initiator: Orientation = Orientation.Forward
    kind: ClassVar[str] = "ended"


FlowEvent.Started = Started  # type: ignore[attr-defined]
FlowEvent.Packet = Packet  # type: ignore[attr-defined]
FlowEvent.Established = Established  # type: ignore[attr-defined]
FlowEvent.StateChange = StateChange  # type: ignore[attr-defined]
FlowEvent.Ended = Ended  # type: ignore[attr-defined]

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
from .layout import NS_PER_S


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

    @property
    def slug(self) -> str:
        return layout.proto_slug(self.number)

    @property
    def name(self) -> str:
        return layout.PROTO_NAMES.get(self.number, f"Other({self.number})")

    @staticmethod
    def Other(number: int) -> "L4Proto":  # noqa: N802 - mirrors the reference's variant name
        return L4Proto(int(number))

    def __repr__(self) -> str:
        return f"L4Proto.{self.name}"


for _number, _name in layout.PROTO_NAMES.items():
    setattr(L4Proto, _name, L4Proto(_number))


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """TCP header facts of one packet (host byte order)."""

    flags: int
    seq: int
    ack: int
    payload_offset: int
    payload_len: int
    window: int

    FIN: ClassVar[int] = layout.TH_FIN
    SYN: ClassVar[int] = layout.TH_SYN
    RST: ClassVar[int] = layout.TH_RST
    PSH: ClassVar[int] = layout.TH_PSH
    ACK: ClassVar[int] = layout.TH_ACK
    URG: ClassVar[int] = layout.TH_URG
    ECE: ClassVar[int] = layout.TH_ECE
    CWR: ClassVar[int] = layout.TH_CWR


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
        return layout.STATE_SLUGS[self.value]

    @property
    def is_terminal(self) -> bool:
        return self in (FlowState.Closed, FlowState.Reset, FlowState.Aborted)


class EndReason(enum.IntEnum):
    """Why a flow ended. ``Shutdown``: still open at the end of input / sensor stop."""

    Fin = layout.END_FIN
    Rst = layout.END_RST
    IdleTimeout = layout.END_IDLE
    Evicted = layout.END_EVICTED
    Shutdown = layout.END_SHUTDOWN

    @property
    def slug(self) -> str:
        return layout.REASON_SLUGS[self.value]


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


@dataclass(frozen=True, slots=True)
class TcpPerf:
    """TCP performance of one flow (docs/semantics.md, "TCP performance"): the handshake times
    split at the sensor, in seconds (None when not measured), and per-side loss signals."""

    rtt_resp: float | None = None  # the initiator's SYN to the responder's SYN/ACK
    rtt_init: float | None = None  # that SYN/ACK to the ACK completing the handshake
    initiator_retrans_pkts: int = 0
    responder_retrans_pkts: int = 0
    initiator_retrans_bytes: int = 0
    responder_retrans_bytes: int = 0
    initiator_zero_win: int = 0
    responder_zero_win: int = 0
    initiator_ooo_pkts: int = 0
    responder_ooo_pkts: int = 0

    @property
    def rtt(self) -> float | None:
        """``rtt_resp + rtt_init`` (tshark's ``tcp.analysis.initial_rtt``), None without both."""
        if self.rtt_resp is None or self.rtt_init is None:
            return None
        return self.rtt_resp + self.rtt_init


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
class Tunnel:
    """The encapsulation of an inner flow (docs/tunnels.md).

    ``type`` is a ``layout.TUN_SLUGS`` slug (``vxlan``, ``gre``, ...), ``depth`` the
    encapsulations around the flow's first decapsulated packet, ``key`` the VNI / GRE key /
    TEID (0: none), ``parents`` the flow ids of the first outer flows that carried it and
    ``parents_seen`` how many different ones did.
    """

    type: str
    depth: int
    key: int
    parents: tuple[int, ...]
    parents_seen: int


@dataclass(frozen=True, slots=True)
class Ended(FlowEvent):
    """The flow is over; ``ts`` is the time it was ended (packet or sweep time).

    ``initiator`` is the orientation of the initiator's packets relative to the
    key (Forward: the initiator is endpoint a); ``state`` is the final state.
    ``tunnel`` is set for an inner flow of a tunnel.
    """

    flow_key: Any
    reason: EndReason
    stats: FlowStats
    history: HistoryString
    ts: Timestamp = field(default_factory=Timestamp)
    state: FlowState = FlowState.Active
    flow_id: int = 0
    initiator: Orientation = Orientation.Forward
    tcp: TcpPerf | None = None  # TCP flows with five-tuple keys
    tunnel: Tunnel | None = None
    kind: ClassVar[str] = "ended"


@dataclass(frozen=True, slots=True)
class Update(FlowEvent):
    """An interim report of a flow still open (active timeout): its counters so far.

    ``ts`` is when it was made (the sweep at or after the due time); the flow
    goes on and ends with an Ended event as usual.
    """

    flow_key: Any
    stats: FlowStats
    history: HistoryString
    ts: Timestamp = field(default_factory=Timestamp)
    state: FlowState = FlowState.Active
    flow_id: int = 0
    initiator: Orientation = Orientation.Forward
    kind: ClassVar[str] = "update"


FlowEvent.Started = Started  # type: ignore[attr-defined]
FlowEvent.Update = Update  # type: ignore[attr-defined]
FlowEvent.Packet = Packet  # type: ignore[attr-defined]
FlowEvent.Established = Established  # type: ignore[attr-defined]
FlowEvent.StateChange = StateChange  # type: ignore[attr-defined]
FlowEvent.Ended = Ended  # type: ignore[attr-defined]

"""flowscope: passive network flow and TCP session tracking.

What's here:

* ``FlowTracker`` (``flowscope.tracker``): the tracker, with ``track(view)``,
  ``track_batch(pkts)``, ``sweep(now)``, ``finish()`` and ``stats``;
  ``TrackerConfig`` (``flowscope.config``) is its one configuration type.
* Events and value types (``flowscope.events``): ``Started``, ``Packet``,
  ``Established``, ``StateChange``, ``Ended`` (all ``FlowEvent``),
  ``Timestamp``, ``FlowSide``, ``Orientation``, ``L4Proto``, ``TcpInfo``, ``Tunnel``,
  ``FlowState``, ``EndReason``, ``FlowStats``, ``HistoryString``, ``TcpPerf``
  (``Ended.tcp``).
* Extractors (``flowscope.keys``): ``FiveTuple`` (bidirectional, or
  ``FiveTuple.directional()``), ``IpPair``, ``MacPair``.
* Capture files (``flowscope.pcap``): streaming pcap/pcapng reading into
  packet batches.
* ``warmup()`` compiles every numba kernel and reports how long it took.

The command line lives in ``flowscope.cli`` (``flowscope pcap ...``).
"""

from .config import ConfigError, TrackerConfig, load_config
from .events import (
    EndReason,
    Ended,
    Established,
    FlowEvent,
    FlowSide,
    FlowState,
    FlowStats,
    HistoryString,
    L4Proto,
    Orientation,
    Packet,
    Started,
    StateChange,
    TcpInfo,
    TcpPerf,
    Tunnel,
    Timestamp,
)
from .keys import Extracted, FiveTuple, FiveTupleKey, IpPair, IpPairKey, MacPair, MacPairKey
from .tracker import FlowTracker, PacketView, TrackerStats
from .warmup import warmup

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "EndReason", "Ended", "Established", "Extracted", "FiveTuple", "FiveTupleKey",
    "FlowEvent", "FlowSide", "FlowState", "FlowStats", "FlowTracker", "HistoryString",
    "IpPair", "IpPairKey", "L4Proto", "MacPair", "MacPairKey", "Orientation", "Packet",
    "PacketView", "Started", "StateChange", "TcpInfo", "TcpPerf", "Timestamp", "Tunnel",
    "TrackerConfig",
    "TrackerStats", "load_config", "warmup",
]

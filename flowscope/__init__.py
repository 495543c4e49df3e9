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

from importlib import import_module

# the function, not its module: loaded now (it imports nothing heavy), so that no later
# ``import flowscope.warmup`` binds the module to this name
from .warmup import warmup

#: public name -> the module that defines it, imported on first use: ``import flowscope``
#: loads nothing else (the command line sets up the process before numpy is imported)
_HOMES = {
    **dict.fromkeys(("ConfigError", "TrackerConfig", "load_config"), "config"),
    **dict.fromkeys(("EndReason", "Ended", "Established", "FlowEvent", "FlowSide", "FlowState",
                     "FlowStats", "HistoryString", "L4Proto", "Orientation", "Packet",
                     "Started", "StateChange", "TcpInfo", "TcpPerf", "Tunnel", "Timestamp"),
                    "events"),
    **dict.fromkeys(("Extracted", "FiveTuple", "FiveTupleKey", "IpPair", "IpPairKey",
                     "MacPair", "MacPairKey"), "keys"),
    **dict.fromkeys(("FlowTracker", "PacketView", "TrackerStats"), "tracker"),
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flowscope' has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = sorted([*_HOMES, "warmup"])

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

import sys
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


def lazy_getattr(package: str, homes: dict[str, str]):
    """A module ``__getattr__`` for ``package`` that imports each name of ``homes`` (name ->
    submodule) from its submodule on first use, and keeps it."""

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{home}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


__getattr__ = lazy_getattr(__name__, _HOMES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = sorted([*_HOMES, "warmup"])

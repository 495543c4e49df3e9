"""The one configuration schema: every key of every section, one validator, one error style.

Three frozen types hold the settings: ``TrackerConfig`` (the engine: timeouts,
``max_flows``, ...; the library's configuration type), ``SensorConfig`` (the
``sensor:`` section, read by ``flowscope live``) and ``OutputSettings`` (the
``output:`` section: format, file, rotation, IPFIX, metrics). ``SCHEMA`` lists
every key once with the function that checks and converts its value; the YAML
loader, the dataclasses' own ``__post_init__`` checks and the command-line
flags all go through it, so a wrong key or value raises ``ConfigError`` with
the same message wherever it came from: the key first (``timeouts.tpc: ...``,
``sensor.ring_size: ...``, ``output.keep: ...``), so the CLI prints one line and
exits 2. Sizes take ``K``, ``M``, ``G``, ``T`` suffixes (powers of 1024, an
optional trailing ``B`` or ``iB``); durations take ``s``, ``m``, ``h``, ``d``,
``w`` and may be combined (``1h30m``); plain numbers are bytes and seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .layout import FRAG_TIMEOUT_S, GENEVE_PORT, NS_PER_S, PROTO_SLUGS, TIMEOUT_CLASSES, VXLAN_PORT

#: ``output.ipfix_records`` names: one IPFIX record per flow, or one per direction.
IPFIX_RECORDS = ("biflow", "uniflow")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


class UsageError(ConfigError):
    """A command-line argument, interface or output path cannot be used (exit status 2)."""


# --- value checkers: (key, value) -> converted value, or ConfigError naming the key ---------

Check = Callable[[str, Any], Any]


def _fail(key: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: {what}, got {value!r}")


def seconds(key: str, value: Any, allow_zero: bool = False, maximum: float = math.inf) -> float:
    """A positive (or, with ``allow_zero``, non-negative) finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, "expected a number of seconds", value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > maximum:
        raise _fail(key, "must be a positive number of seconds", value)
    return value


def integer(minimum: int, maximum: int) -> Check:
    """An integer in ``[minimum, maximum]``."""
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, "expected an integer", value)
        if not minimum <= value <= maximum:
            raise _fail(key, f"must be between {minimum} and {maximum}", value)
        return value
    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "expected true or false", value)
    return value


def choice(*options: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise _fail(key, f"expected one of {', '.join(options)}", value)
        return value
    return check


def names(what: str, allowed: tuple[str, ...] = (), max_len: int = 1 << 30) -> Check:
    """A non-empty list of distinct strings (a single string is a one-item list)."""
    def check(key: str, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if (not isinstance(items, (list, tuple)) or not items
                or any(not isinstance(n, str) or not n or len(n) > max_len for n in items)
                or (allowed and any(n not in allowed for n in items))
                or len(set(items)) != len(items)):
            raise _fail(key, f"expected a list of {what}", value)
        return tuple(n for n in allowed if n in items) if allowed else tuple(items)
    return check


def _items(key: str, value: Any, what: str) -> list:
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)):
        raise _fail(key, f"expected a list of {what}", value)
    return list(items)


def cidrs(key: str, value: Any) -> tuple[str, ...]:
    """A list of IPv4/IPv6 networks (``10.0.0.0/8``, ``fd00::/8``; an address is a /32 or
    /128); host bits must be zero. Returns the networks as strings, normalised."""
    import ipaddress

    out = []
    for item in _items(key, value, "CIDRs like 10.0.0.0/8"):
        try:
            out.append(str(ipaddress.ip_network(item, strict=True)))
        except (TypeError, ValueError):
            raise _fail(key, "expected a list of CIDRs like 10.0.0.0/8 or fd00::/8 (host bits "
                             "zero)", item) from None
    return tuple(dict.fromkeys(out))


def ports(key: str, value: Any) -> tuple[int, ...]:
    """A list of port numbers 0..65535."""
    items = _items(key, value, "port numbers")
    if any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535 for p in items):
        raise _fail(key, "expected a list of port numbers 0..65535", value)
    return tuple(sorted(set(items)))


#: Protocol names a filter takes besides numbers (the JSON ``proto`` slugs).
PROTOCOL_NAMES = {slug: num for num, slug in PROTO_SLUGS.items()}


def protocols(key: str, value: Any) -> tuple[int, ...]:
    """A list of IP protocols: numbers 0..255 or names (tcp, udp, icmp, icmp6, sctp)."""
    out = []
    for p in _items(key, value, "protocols"):
        if isinstance(p, str) and p.lower() in PROTOCOL_NAMES:
            out.append(PROTOCOL_NAMES[p.lower()])
        elif isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 255:
            out.append(p)
        else:
            raise _fail(key, "expected a list of IP protocol numbers 0..255 or names ("
                             + ", ".join(PROTOCOL_NAMES) + ")", p)
    return tuple(sorted(set(out)))


def callable_or_none(key: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigError(f"{key}: must be callable")
    return value


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(value: Any, key: str) -> int:
    """Bytes from an integer or a string like ``"100M"``, ``"1.5G"``, ``"512KiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise ConfigError(f"{key}: expected a size like 100M, 1G or a number of bytes, "
                          f"got {value!r}")
    if n < 1:
        raise ConfigError(f"{key}: must be at least 1 byte, got {value!r}")
    return n


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number or a string like ``"30s"``, ``"15m"``, ``"1h30m"``, ``"1d"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        parts = _DURATION_PART.finditer(value)
        secs = sum(float(p.group(1)) * _DURATION_UNITS[p.group(2).lower()] for p in parts)
    else:
        raise ConfigError(f"{key}: expected a duration like 30s, 15m, 1h or 1d, got {value!r}")
    if not math.isfinite(secs) or secs <= 0:
        raise ConfigError(f"{key}: must be a positive duration, got {value!r}")
    return secs


def parse_address(value: Any, key: str, example: str = "127.0.0.1:9464") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> ``(host, port)``."""
    if isinstance(value, str):
        host, sep, port = value.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    raise ConfigError(f"{key}: expected HOST:PORT (e.g. {example}), got {value!r}")


def _output_format(key: str, value: Any) -> str:
    from .output import FORMATS

    if value not in FORMATS:
        raise _fail(key, f"expected one of {', '.join(sorted(FORMATS))}", value)
    return value


def _ipfix_records(key: str, value: Any) -> str:
    return choice(*IPFIX_RECORDS)(key, value)


def _path(key: str, value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "expected a file name", value)
    return None if value == "-" else value


def _ring_size(key: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value < 4096
            or value & (value - 1)):
        raise _fail(key, "expected a power of two >= 4096 bytes", value)
    return value


# --- the three settings types ---------------------------------------------------------------

MAX_FLOWS_LIMIT = 1 << 28


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    Parameters
    ----------
    tcp_timeout, udp_timeout, icmp_timeout, other_timeout : float
        Idle timeouts in seconds (defaults 300, 60, 30, 30). A flow expires
        when ``now - last_seen >= timeout``.
    timeout_fn : callable, optional
        ``timeout_fn(key) -> seconds | None`` decides the idle timeout of each
        new flow; ``None`` falls back to the per-protocol value.
    max_flows : int
        Most flows held at once (>= 1); a new flow beyond it evicts the least
        recently touched one.
    infer_tcp_initiator : bool
        When a flow's first packet is a SYN+ACK, make its sender the Responder.
    sweep_interval : float, optional
        Sweep idle flows every this many seconds of packet time while
        tracking. ``None`` (the library default) sweeps only when ``sweep()``
        is called, as the reference does; the CLI uses 1 s.
    fragment_timeout : float
        Seconds a fragmented TCP/UDP/SCTP datagram's ports are kept for its
        non-first fragments, from its first-seen fragment (default 30, as
        ``layout.FRAG_TIMEOUT_S``); non-first fragments whose first fragment
        does not arrive in that time are counted in ``fragments_orphaned``.
    verify_checksums : bool
        Verify IPv4 header and TCP/UDP/ICMP checksums (off by default, like
        Zeek's ``-C``): bad ones are counted in ``bad_checksums`` and give
        Zeek's ``C``/``c`` history letters. Needs rows from a reader that
        verified them (``CaptureReader(verify_checksums=True)``).
    include_cidrs, exclude_cidrs : tuple of str
        Flow filter (YAML ``filter.include.cidrs`` ...): keep only flows with an
        address in an include network; drop flows with an address in an
        exclude network. Empty lists are not in force.
    include_ports, exclude_ports : tuple of int
        The same for the flow's ports (either side; 0 for protocols without ports).
    include_protocols, exclude_protocols : tuple of int
        The same for the IP protocol (names allowed: tcp, udp, icmp, icmp6, sctp).
    key_vlan : bool
        Make the outer VLAN id part of the flow key (for overlapping address
        spaces): the same five-tuple in two VLANs is two flows. Off by default.
    key_icmp : bool
        Key ICMP and ICMPv6 as Zeek does: the message type is the first port and the
        paired type (echo request/reply, ...) or else the code the second, so an
        echo exchange and the unreachables between the same hosts are separate
        flows. Off by default: the reference semantics key ICMP with ports 0.
    active_timeout : float, optional
        Seconds: a flow open longer than this gets an interim Update record
        (counters so far) every ``active_timeout`` from its start, at the first
        sweep at or after each due time; the flow itself goes on. ``None``
        (default): no Update records.
    sample_rate : int
        Keep 1 flow in ``sample_rate``, chosen by a hash of the flow's key
        (1 = every flow). The filter and the sampler decide when a flow would be
        created; the packets of dropped flows are counted (``packets_filtered``,
        ``packets_sampled_out``).
    decapsulate : bool
        Decapsulate tunnels (docs/tunnels.md; default True): every packet carried
        by VXLAN, Geneve, GRE, IP in IP, GTP-U, Teredo or AYIYA is also a packet of
        an inner flow linked to its outer flow, offline and live.
    vxlan_port, geneve_port : int
        UDP ports of VXLAN (default 4789) and Geneve (default 6081).
    dns : bool
        Keep each flow's first DNS query name, qtype, rcode, answer count and
        query-to-response time (port 53, UDP and TCP; default on). Costs
        ``DNS_NAME_MAX`` (256) bytes of memory per flow slot in use.
    """

    tcp_timeout: float = 300.0
    udp_timeout: float = 60.0
    icmp_timeout: float = 30.0
    other_timeout: float = 30.0
    timeout_fn: Optional[Callable[[Any], Optional[float]]] = None
    max_flows: int = 100_000
    infer_tcp_initiator: bool = False
    sweep_interval: Optional[float] = None
    fragment_timeout: float = FRAG_TIMEOUT_S
    verify_checksums: bool = False
    include_cidrs: tuple = ()
    exclude_cidrs: tuple = ()
    include_ports: tuple = ()
    exclude_ports: tuple = ()
    include_protocols: tuple = ()
    exclude_protocols: tuple = ()
    sample_rate: int = 1
    active_timeout: Optional[float] = None
    decapsulate: bool = True
    vxlan_port: int = VXLAN_PORT
    geneve_port: int = GENEVE_PORT
    key_vlan: bool = False
    key_icmp: bool = False
    dns: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _check_fields(self, "")

    def timeout_ns(self, name: str) -> int:
        """Idle timeout of a timeout class (``tcp``, ``udp``, ``icmp``, ``other``) in ns."""
        return int(round(getattr(self, f"{name}_timeout") * NS_PER_S))

    def timeout_table(self) -> np.ndarray:
        """``int64[256]``: the idle timeout (ns) of each IP protocol number."""
        table = np.full(256, self.timeout_ns("other"), dtype=np.int64)
        for name, protos in TIMEOUT_CLASSES:
            for proto in protos:
                table[proto] = self.timeout_ns(name)
        return table

    def replace(self, **changes: Any) -> "TrackerConfig":
        return replace(self, **changes)


HOOKS = ("ingress", "egress")
XDP_MODES = ("auto", "generic", "native")
INGRESS = ("auto", "xdp", "tc")


@dataclass(frozen=True)
class SensorConfig:
    """Settings of the live sensor (the ``sensor:`` section).

    Attributes
    ----------
    map_size : int or None
        Flow map entries (``FS_MAX_FLOWS``); None = the tracker's ``max_flows``.
    ring_size : int
        Ring buffer bytes, a power of two and a multiple of the page size.
    hooks : tuple of str
        ``ingress`` (XDP, or TC with ``ingress: tc``) and/or ``egress`` (TC, tcx link).
    ingress : str
        ``auto`` (default: native XDP where the driver has it, else a tcx ingress link,
        which costs less than generic XDP; generic XDP only without tcx), ``xdp`` or
        ``tc`` (e.g. on an interface whose XDP hook another program holds).
    xdp_mode : str
        When XDP is attached: ``auto`` (native where the driver has it, else generic;
        generic on veth, whose native mode converts skbs and costs more), ``generic``
        (works everywhere) or ``native`` (driver support needed). A mode other than
        ``auto`` makes ``ingress: auto`` attach XDP in that mode.
    sweep_interval : float
        Seconds between idle syncs of the flow map.
    report_interval : float
        Seconds between counter reports on stderr; 0 = only at exit.
    batch : int
        Ring events per drain (bounds the memory of one step).
    interfaces : tuple of str
        Interfaces to attach to when ``-i`` is not given on the command line.
    reattach : bool
        Attach again when an interface that disappeared comes back under its name.
    drops : bool
        Count the kernel's packet drops (``skb:kfree_skb``) to their flows and by
        reason (default on).
    promisc : bool
        Hold each interface in promiscuous mode while attached (default on, as tcpdump
        and Zeek do), so that frames addressed to other hosts, e.g. on a mirror port,
        are seen.
    """

    map_size: Optional[int] = None
    ring_size: int = 4 << 20
    hooks: tuple = HOOKS
    ingress: str = "auto"
    xdp_mode: str = "auto"
    sweep_interval: float = 1.0
    report_interval: float = 10.0
    batch: int = 4096
    interfaces: tuple = ()
    reattach: bool = False
    drops: bool = True
    promisc: bool = True

    def __post_init__(self) -> None:
        _check_fields(self, "sensor")

    def replace(self, **changes: Any) -> "SensorConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class OutputSettings:
    """Validated ``output:`` settings; every field is optional.

    Attributes
    ----------
    format : str or None
        A ``--format`` name (``jsonl``, ``eve``, ``zeek``, ...); None = the CLI default.
    path : str or None
        File the records go to; None = standard output.
    rotate_bytes : int or None
        Rotate the file before it would grow beyond this many bytes.
    rotate_seconds : float or None
        Rotate the file every this many seconds (aligned to the clock).
    keep : int or None
        Rotated files to keep; None keeps them all.
    ipfix : (str, int) or None
        IPFIX collector to export ended flows to.
    ipfix_records : str
        ``biflow`` (one RFC 5103 record per flow) or ``uniflow`` (one per direction,
        for collectors such as nfdump that show no reverse TCP flags of a biflow).
    metrics : (str, int) or None
        Address of the Prometheus exporter (``flowscope live``).
    """

    format: Optional[str] = None
    path: Optional[str] = None
    rotate_bytes: Optional[int] = None
    rotate_seconds: Optional[float] = None
    keep: Optional[int] = None
    ipfix: Optional[tuple[str, int]] = None
    ipfix_records: str = "biflow"
    metrics: Optional[tuple[str, int]] = None

    @property
    def rotates(self) -> bool:
        return self.rotate_bytes is not None or self.rotate_seconds is not None


@dataclass(frozen=True)
class Key:
    """One configuration key: where it lives in YAML, the field it sets, its check."""

    path: str  # dotted YAML path: "max_flows", "timeouts.tcp", "sensor.ring_size"
    field: str  # the field of the section's settings type
    check: Check
    flag: Optional[str] = None  # the command-line flag that sets it, if any
    yaml: bool = True  # False: set only through the library (a Python callable)


def _timeout_key(name: str) -> Key:
    return Key(f"timeouts.{name}", f"{name}_timeout", seconds, f"--{name}-timeout")


#: The two lists of the flow filter (YAML ``filter.include`` / ``filter.exclude``).
FILTER_SIDES = ("include", "exclude")

#: Every key of every section ("" = the top level, the tracker's keys).
SCHEMA: dict[str, tuple[Key, ...]] = {
    "": (
        Key("max_flows", "max_flows", integer(1, MAX_FLOWS_LIMIT), "--max-flows"),
        Key("infer_tcp_initiator", "infer_tcp_initiator", boolean, "--infer-tcp-initiator"),
        Key("sweep_interval", "sweep_interval", seconds, "--sweep-interval"),
        Key("fragment_timeout", "fragment_timeout", seconds),
        Key("verify_checksums", "verify_checksums", boolean, "--verify-checksums"),
        Key("decapsulate", "decapsulate", boolean, "--no-decapsulate"),
        Key("vxlan_port", "vxlan_port", integer(1, 65535), "--vxlan-port"),
        Key("geneve_port", "geneve_port", integer(1, 65535), "--geneve-port"),
        Key("dns", "dns", boolean),
        *(_timeout_key(name) for name, _protos in TIMEOUT_CLASSES),
        *(Key(f"filter.{side}.{what}", f"{side}_{what}", check)
          for side in FILTER_SIDES
          for what, check in (("cidrs", cidrs), ("ports", ports), ("protocols", protocols))),
        Key("sample_rate", "sample_rate", integer(1, 1 << 31), "--sample-rate"),
        Key("key_vlan", "key_vlan", boolean),
        Key("key_icmp", "key_icmp", boolean, "--key-icmp"),
        Key("active_timeout", "active_timeout", lambda k, v: float(seconds(k, v, maximum=1e9)),
            "--active-timeout"),
        Key("timeout_fn", "timeout_fn", callable_or_none, yaml=False),
    ),
    "sensor": (
        Key("sensor.map_size", "map_size", integer(1, MAX_FLOWS_LIMIT)),
        Key("sensor.ring_size", "ring_size", _ring_size),
        Key("sensor.hooks", "hooks", names("ingress and/or egress", HOOKS)),
        Key("sensor.ingress", "ingress", choice(*INGRESS)),
        Key("sensor.xdp_mode", "xdp_mode", choice(*XDP_MODES), "--xdp-mode"),
        Key("sensor.sweep_interval", "sweep_interval",
            lambda k, v: float(seconds(k, v, maximum=1e6)), "--sweep-interval"),
        Key("sensor.report_interval", "report_interval",
            lambda k, v: float(seconds(k, v, allow_zero=True, maximum=1e6))),
        Key("sensor.batch", "batch", integer(16, 1 << 20)),
        Key("sensor.interfaces", "interfaces", names("interface names", max_len=15), "-i"),
        Key("sensor.reattach", "reattach", boolean),
        Key("sensor.drops", "drops", boolean),
        Key("sensor.promisc", "promisc", boolean, "--no-promisc"),
    ),
    "output": (
        Key("output.format", "format", _output_format, "--format"),
        Key("output.path", "path", _path, "-o"),
        Key("output.rotate_size", "rotate_bytes", lambda k, v: parse_size(v, k)),
        Key("output.rotate_interval", "rotate_seconds", lambda k, v: parse_duration(v, k)),
        Key("output.keep", "keep", lambda k, v: _keep(k, v)),
        Key("output.ipfix", "ipfix", lambda k, v: parse_address(v, k, "127.0.0.1:4739"),
            "--ipfix"),
        Key("output.ipfix_records", "ipfix_records", lambda k, v: _ipfix_records(k, v),
            "--ipfix-records"),
        Key("output.metrics", "metrics", lambda k, v: parse_address(v, k), "--metrics"),
    ),
}

_TYPES = {"": TrackerConfig, "sensor": SensorConfig, "output": OutputSettings}
#: Fields a type may hold unchecked (not configuration keys).
_UNCHECKED = {"extra"}


def _keep(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, "expected a number of files (1 or more)", value)
    return value


def _key_for_field(section: str, name: str) -> Key:
    for k in SCHEMA[section]:
        if k.field == name:
            return k
    raise KeyError(name)


def _check_fields(obj: Any, section: str) -> None:
    """Run every set field of a settings object through its key's check (``__post_init__``).

    Errors name the key as the object's users spell it: the YAML path for the
    sections, the field name for ``TrackerConfig`` (``tcp_timeout``, ``max_flows``).
    """
    for f in fields(obj):
        if f.name in _UNCHECKED:
            continue
        value = getattr(obj, f.name)
        if value is None or value == f.default:
            continue
        key = _key_for_field(section, f.name)
        checked = key.check(key.path if section else key.field, value)
        if checked != value or type(checked) is not type(value):
            object.__setattr__(obj, f.name, checked)


def section_from_mapping(section: str, data: Any, base: Any = None) -> Any:
    """Validate one section of a parsed YAML document into its settings type.

    ``base`` supplies the values the mapping leaves out. ``None`` values leave a
    key unset. Unknown keys and bad values raise ConfigError naming the key.
    """
    cls = _TYPES[section]
    base = base if base is not None else cls()
    if data is None:
        return base
    label = section or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of keys, got {type(data).__name__}")
    keys = {k.path: k for k in SCHEMA[section] if k.yaml}
    changes: dict[str, Any] = {}
    for name, value in _flatten(section, data).items():
        key = keys.get(name)
        if key is None:
            raise ConfigError(f"{name}: unknown key (known: {', '.join(_known(section, name))})")
        if value is None:
            if section:
                changes[key.field] = None
            continue
        changes[key.field] = key.check(name, value)
    out = replace(base, **changes)
    _cross_checks(section, out, data)
    return out


def _flatten(section: str, data: dict) -> dict[str, Any]:
    prefix = f"{section}." if section else ""
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if not section and k == "timeouts":
            if not isinstance(v, dict):
                raise ConfigError("timeouts: expected a mapping like {tcp: 300, udp: 60}")
            for proto, secs in v.items():
                out[f"timeouts.{proto}"] = secs
        elif not section and k == "filter":
            if not isinstance(v, dict):
                raise ConfigError("filter: expected a mapping like {exclude: {ports: [22]}}")
            for side, lists in v.items():
                if not isinstance(lists, dict):
                    raise ConfigError(f"filter.{side}: expected a mapping like "
                                      "{cidrs: [10.0.0.0/8], ports: [53], protocols: [udp]}")
                for what, items in lists.items():
                    out[f"filter.{side}.{what}"] = items
        else:
            out[name] = v
    return out


def _known(section: str, name: str) -> list[str]:
    """The keys a message about the unknown key ``name`` lists."""
    paths = [k.path for k in SCHEMA[section] if k.yaml]
    if name.startswith("timeouts."):
        return sorted(p.split(".", 1)[1] for p in paths if p.startswith("timeouts."))
    if name.startswith("filter."):
        return sorted(p.split(".", 1)[1] for p in paths if p.startswith("filter."))
    if section:
        return sorted(p.split(".", 1)[1] for p in paths)
    return sorted({p.split(".")[0] for p in paths} | set(SECTIONS))


def _cross_checks(section: str, out: Any, data: dict) -> None:
    if section == "output":
        for key in ("rotate_size", "rotate_interval"):
            if data.get(key) is not None and out.path is None:
                raise ConfigError(f"output.{key}: needs output.path (standard output cannot be "
                                  "rotated)")
        if out.keep is not None and not out.rotates:
            raise ConfigError("output.keep: needs output.rotate_size or output.rotate_interval")


# --- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A whole configuration: the tracker's, the sensor's and the output's settings."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    output: OutputSettings = field(default_factory=OutputSettings)


#: Top-level sections besides the tracker's keys.
SECTIONS = ("sensor", "output")


def config_from_mapping(data: Any, base: TrackerConfig | None = None) -> TrackerConfig:
    """The tracker's settings from a parsed YAML document (other sections kept in ``extra``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(data).__name__}")
    base = base or TrackerConfig()
    extra = {k: v for k, v in data.items() if k in SECTIONS}
    top = {k: v for k, v in data.items() if k not in SECTIONS}
    cfg = section_from_mapping("", top, base)
    return replace(cfg, extra={**base.extra, **extra})


def config_from_document(data: Any, base: TrackerConfig | None = None) -> Config:
    """Every section of a parsed YAML document, validated."""
    tracker = config_from_mapping(data, base)
    return Config(tracker=tracker,
                  sensor=section_from_mapping("sensor", tracker.extra.get("sensor")),
                  output=section_from_mapping("output", tracker.extra.get("output")))


def _read_yaml(path: str | Path) -> Any:
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None


def load_config(path: str | Path, base: TrackerConfig | None = None) -> TrackerConfig:
    """Read a YAML config file's tracker settings (every section is validated); errors name
    the file and the key. The ``sensor:`` and ``output:`` sections stay in ``extra``."""
    return load(path, base).tracker


def load(path: str | Path, base: TrackerConfig | None = None) -> Config:
    """Read and validate a whole YAML config file; errors name the file and the key."""
    try:
        return config_from_document(_read_yaml(path), base)
    except ConfigError as exc:
        if str(exc).startswith(f"{Path(path)}: "):
            raise
        raise ConfigError(f"{Path(path)}: {exc}") from None


def output_settings(mapping: Any) -> OutputSettings:
    """Validate an ``output:`` section (``load_config(path).extra.get("output")``)."""
    return section_from_mapping("output", mapping)


def sensor_settings(mapping: Any, base: SensorConfig | None = None) -> SensorConfig:
    """Validate a ``sensor:`` section, over ``base``."""
    return section_from_mapping("sensor", mapping, base)


def flag_error(exc: ConfigError, section: str = "") -> ConfigError:
    """A ConfigError about a key set by a command-line flag, naming the flag instead."""
    msg = str(exc)
    key_path, _, rest = msg.partition(": ")
    for k in SCHEMA[section]:
        if k.flag and key_path in (k.path, k.field):
            return ConfigError(f"{k.flag}: {rest}")
    return exc

"""The one configuration type: tracker defaults, validation and YAML loading.

``TrackerConfig`` holds everything the engine needs; ``load_config`` reads the
same settings from a YAML file (see ``docs/config.md``). A wrong key or value
raises ``ConfigError`` whose message names the key, so the CLI can print one
line and exit 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

NS_PER_S = 1_000_000_000


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


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
    """

    tcp_timeout: float = 300.0
    udp_timeout: float = 60.0
    icmp_timeout: float = 30.0
    other_timeout: float = 30.0
    timeout_fn: Optional[Callable[[Any], Optional[float]]] = None
    max_flows: int = 100_000
    infer_tcp_initiator: bool = False
    sweep_interval: Optional[float] = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("tcp_timeout", "udp_timeout", "icmp_timeout", "other_timeout"):
            _positive_seconds(name, getattr(self, name))
        if self.sweep_interval is not None:
            _positive_seconds("sweep_interval", self.sweep_interval)
        if isinstance(self.max_flows, bool) or not isinstance(self.max_flows, int):
            raise ConfigError(f"max_flows: expected an integer, got {self.max_flows!r}")
        if not 1 <= self.max_flows <= 1 << 28:
            raise ConfigError(f"max_flows: must be between 1 and {1 << 28}, got {self.max_flows}")
        if not isinstance(self.infer_tcp_initiator, bool):
            raise ConfigError(
                f"infer_tcp_initiator: expected true or false, got {self.infer_tcp_initiator!r}"
            )
        if self.timeout_fn is not None and not callable(self.timeout_fn):
            raise ConfigError("timeout_fn: must be callable")

    def timeout_ns(self, name: str) -> int:
        return int(round(getattr(self, f"{name}_timeout") * NS_PER_S))

    def replace(self, **changes: Any) -> "TrackerConfig":
        return replace(self, **changes)


def _positive_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a positive number of seconds, got {value!r}")


# YAML layout: top-level keys, with the timeouts grouped.
_TIMEOUT_KEYS = {"tcp", "udp", "icmp", "other"}
_TOP_KEYS = {"max_flows", "infer_tcp_initiator", "sweep_interval", "timeouts"}
#: Top-level sections owned by other front ends (validated there).
EXTRA_SECTIONS: set[str] = {"sensor", "output"}


def config_from_mapping(data: Any, base: TrackerConfig | None = None) -> TrackerConfig:
    """Build a config from a parsed YAML mapping, naming any bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(data).__name__}")
    changes: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in EXTRA_SECTIONS:
            extra[key] = value
            continue
        if key not in _TOP_KEYS:
            known = ", ".join(sorted(_TOP_KEYS | EXTRA_SECTIONS))
            raise ConfigError(f"{key}: unknown key (known: {known})")
        if key == "timeouts":
            if not isinstance(value, dict):
                raise ConfigError("timeouts: expected a mapping like {tcp: 300, udp: 60}")
            for proto, seconds in value.items():
                if proto not in _TIMEOUT_KEYS:
                    raise ConfigError(
                        f"timeouts.{proto}: unknown key (known: {', '.join(sorted(_TIMEOUT_KEYS))})"
                    )
                _positive_seconds(f"timeouts.{proto}", seconds)
                changes[f"{proto}_timeout"] = seconds
        else:
            changes[key] = value
    base = base or TrackerConfig()
    return replace(base, extra={**base.extra, **extra}, **changes)


def load_config(path: str | Path, base: TrackerConfig | None = None) -> TrackerConfig:
    """Read a YAML config file; errors name the file and the key."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    try:
        return config_from_mapping(data, base)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None

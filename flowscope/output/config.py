"""The ``output:`` section of the YAML config: where records go, rotation, exports, metrics.

``output_settings(mapping)`` validates the section (``TrackerConfig.extra["output"]``
after ``load_config``) into a frozen ``OutputSettings``; a wrong key or value raises
``ConfigError`` naming it (``output.rotate_size: ...``), so the CLI prints one line
and exits 2. Sizes take ``K``, ``M``, ``G``, ``T`` suffixes (powers of 1024, an
optional trailing ``B`` or ``iB``); durations take ``s``, ``m``, ``h``, ``d``,
``w`` and may be combined (``1h30m``); plain numbers are bytes and seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..config import ConfigError

KEYS = ("format", "path", "rotate_size", "rotate_interval", "keep", "ipfix", "metrics")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
    metrics : (str, int) or None
        Address of the Prometheus exporter (``flowscope live``).
    """

    format: Optional[str] = None
    path: Optional[str] = None
    rotate_bytes: Optional[int] = None
    rotate_seconds: Optional[float] = None
    keep: Optional[int] = None
    ipfix: Optional[tuple[str, int]] = None
    metrics: Optional[tuple[str, int]] = None

    @property
    def rotates(self) -> bool:
        return self.rotate_bytes is not None or self.rotate_seconds is not None


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


def parse_address(value: Any, key: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> ``(host, port)``."""
    if isinstance(value, str):
        host, sep, port = value.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    raise ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}")


def output_settings(mapping: Any) -> OutputSettings:
    """Validate the ``output:`` section of a config file.

    Parameters
    ----------
    mapping : dict or None
        The parsed section, e.g. ``load_config(path).extra.get("output")``.

    Raises
    ------
    ConfigError
        The message starts with the key at fault: ``output.keep: ...``.
    """
    if mapping is None:
        return OutputSettings()
    if not isinstance(mapping, dict):
        raise ConfigError(f"output: expected a mapping of keys, got {type(mapping).__name__}")
    for key in mapping:
        if key not in KEYS:
            raise ConfigError(f"output.{key}: unknown key (known: {', '.join(sorted(KEYS))})")
    m = {k: v for k, v in mapping.items() if v is not None}
    fields: dict[str, Any] = {}
    if "format" in m:
        from . import FORMATS

        if m["format"] not in FORMATS:
            raise ConfigError(f"output.format: expected one of {', '.join(sorted(FORMATS))}, "
                              f"got {m['format']!r}")
        fields["format"] = m["format"]
    if "path" in m:
        if not isinstance(m["path"], str) or not m["path"].strip():
            raise ConfigError(f"output.path: expected a file name, got {m['path']!r}")
        fields["path"] = None if m["path"] == "-" else m["path"]
    if "rotate_size" in m:
        fields["rotate_bytes"] = parse_size(m["rotate_size"], "output.rotate_size")
    if "rotate_interval" in m:
        fields["rotate_seconds"] = parse_duration(m["rotate_interval"], "output.rotate_interval")
    if "keep" in m:
        keep = m["keep"]
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"output.keep: expected a number of files (1 or more), got {keep!r}")
        fields["keep"] = keep
    for key in ("ipfix", "metrics"):
        if key in m:
            fields[key] = parse_address(m[key], f"output.{key}")
    out = OutputSettings(**fields)
    for key in ("rotate_size", "rotate_interval"):
        if key in m and out.path is None:
            raise ConfigError(f"output.{key}: needs output.path (standard output cannot be "
                              "rotated)")
    if out.keep is not None and not out.rotates:
        raise ConfigError("output.keep: needs output.rotate_size or output.rotate_interval")
    return out

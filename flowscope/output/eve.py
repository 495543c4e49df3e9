"""Suricata EVE JSON writer: one ``event_type: "flow"`` record per ended flow.

The records follow Suricata's ``flow`` event (``output-json-flow.c``) so that
pipelines built for Suricata's ``eve.json`` (Logstash/Filebeat EVE modules,
jq scripts, SIEM parsers) read them unchanged. The field mapping, and where
flowscope's view of a flow differs from Suricata's, is documented in
``docs/output-formats-eve-ipfix.md``. In short:

* ``src_*`` is the flow's initiator (the sender of its first packet), as
  Suricata's "to server" direction;
* ``flow.state`` is Suricata's ``new`` / ``established`` / ``closed``;
* ``flow.reason`` is Suricata's vocabulary: ``timeout`` for flows ended by
  FIN, RST or idle timeout (Suricata removes closed TCP flows on its
  closed-state timeout too), ``forced`` for flows evicted to make room,
  ``shutdown`` for flows still open at the end of the input / sensor stop;
* ``tcp.state`` uses Suricata's TCP state names where flowscope's state
  machine has a counterpart, and is left out for mid-stream pickups.
"""

from __future__ import annotations

import json
import time
from typing import IO

import numpy as np

from .._kernels.connout import (
    EVE_REASON_NAMES, EVE_TCP_STATE_NAMES, MAX_LINE, format_eve,
)
from .common import KernelTextWriter

# Suricata's names by flowscope value (one home: the kernel module that writes them)
EVE_REASONS = EVE_REASON_NAMES
EVE_TCP_STATES = EVE_TCP_STATE_NAMES


def eve_time(ns: int) -> str:
    """Suricata's timestamp format in UTC: ``2024-01-02T03:04:05.123456+0000``."""
    s, rem = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{rem // 1000:06d}+0000"


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def eve_flow_ids(keys: np.ndarray, started: np.ndarray) -> np.ndarray:
    """Suricata-shaped flow ids for records with these keys and start times.

    Suricata builds ``flow_id`` from the start time's seconds and microseconds
    and the flow's hash, cut to 51 bits (the largest integer JSON consumers
    keep exactly). Here the hash is a 32-bit hash of the packed key, so the id
    depends only on the flow (its key and first packet time): the same flow
    gets the same id offline and live, and in every output.

    Parameters
    ----------
    keys : ndarray, shape (n, 5), uint64
    started : ndarray, shape (n,), int64 (ns)
    """
    h = np.zeros(keys.shape[0], dtype=np.uint64)
    for w in range(keys.shape[1]):
        h = _mix64(h ^ keys[:, w].astype(np.uint64))
    h32 = (h >> np.uint64(32)) & np.uint64(0xFFFFFFFF)
    st = started.astype(np.int64)
    secs = (st // 1_000_000_000).astype(np.uint64)
    usecs = ((st % 1_000_000_000) // 1000).astype(np.uint64)
    fid = ((secs & np.uint64(0xFFFF)) << np.uint64(48)) | (
        (usecs & np.uint64(0xFFFF)) << np.uint64(32)) | h32
    return fid & np.uint64(0x7FFFFFFFFFFFF)


class EveWriter(KernelTextWriter):
    """Writes ended flows as Suricata EVE JSON ``flow`` records, one per line.

    Parameters
    ----------
    out : text stream
        Where the lines go (e.g. an ``eve.json`` opened for appending).
    community_id_seed : int
        Seed of the ``community_id`` field (Suricata's
        ``community-id-seed``; 0 unless the sensors were configured otherwise).

    Only ``EV_ENDED`` records are written; other event kinds are ignored, so
    the tracker is best run with ``events="ended"``. Flows keyed by MAC pair
    have no IP endpoints and are skipped (counted in ``skipped``). The lines are
    formatted by ``flowscope._kernels.connout.format_eve``.
    """

    ENDED_ONLY = True

    def __init__(self, out: IO[str], community_id_seed: int = 0) -> None:
        super().__init__(out, MAX_LINE)
        self.seed = int(community_id_seed)
        self.iface_names: list[str] = []

    @property
    def iface_names(self) -> list[str]:
        """Interface names by ``iface`` value (``in_iface``, written only for named ones)."""
        return self._iface_names

    @iface_names.setter
    def iface_names(self, names) -> None:
        self._iface_names = list(names)
        # each name as its JSON string, quotes included (empty: not named)
        texts = [json.dumps(n).encode("ascii") if n else b"" for n in self._iface_names]
        width = max([1] + [len(t) for t in texts])
        self._names = np.zeros((max(1, len(texts)), width), dtype=np.uint8)
        self._name_lens = np.zeros(self._names.shape[0], dtype=np.int64)
        for i, t in enumerate(texts):
            self._names[i, :len(t)] = np.frombuffer(t, dtype=np.uint8)
            self._name_lens[i] = len(t)

    def _format(self, recs, buf):
        fids = eve_flow_ids(recs["key"], recs["started"])
        return format_eve(recs, buf, fids, self.seed, self._work, self._names,
                          self._name_lens, *self._reasons)

    def write_records(self, recs: np.ndarray) -> None:
        self._write(recs)

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        self.out.flush()

    def close(self, summary: dict | None = None) -> None:
        self.out.flush()

"""Convert the kernel's CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns) to wall-clock time.

wall = ktime + offset, offset = CLOCK_REALTIME - CLOCK_MONOTONIC. The offset is
sampled as the tightest of many bracketing reads (monotonic, realtime,
monotonic: the realtime read is matched with the midpoint of the narrowest
bracket) and should be refreshed about once a second, since NTP slews and steps
the wall clock.
"""

from __future__ import annotations

import time


def measure_offset(samples: int = 64) -> tuple[int, int]:
    """``(offset_ns, uncertainty_ns)`` of REALTIME - MONOTONIC from ``samples`` brackets."""
    mono = time.clock_gettime_ns
    best = None
    for _ in range(max(1, samples)):
        t0 = mono(time.CLOCK_MONOTONIC)
        w = mono(time.CLOCK_REALTIME)
        t1 = mono(time.CLOCK_MONOTONIC)
        width = t1 - t0
        if best is None or width < best[1]:
            best = (w - (t0 + width // 2), width)
    return best[0], (best[1] + 1) // 2


class MonoToWall:
    """Monotonic -> wall-clock converter with a periodic refresh.

    Parameters
    ----------
    refresh_s : float
        ``maybe_refresh`` re-measures when the offset is older than this.
    """

    def __init__(self, refresh_s: float = 1.0, samples: int = 64):
        self.refresh_s = refresh_s
        self.samples = samples
        self.offset_ns = 0
        self.uncertainty_ns = 0
        self._measured_at = 0.0
        self.refresh()

    def refresh(self) -> int:
        """Re-measure now; returns the new offset (ns)."""
        self.offset_ns, self.uncertainty_ns = measure_offset(self.samples)
        self._measured_at = time.monotonic()
        return self.offset_ns

    def maybe_refresh(self) -> bool:
        """Refresh when the offset is older than ``refresh_s``; True if it did."""
        if time.monotonic() - self._measured_at >= self.refresh_s:
            self.refresh()
            return True
        return False

    def to_wall_ns(self, mono_ns):
        """Wall time (ns since the epoch) of a monotonic ns value or numpy array."""
        return mono_ns + self.offset_ns

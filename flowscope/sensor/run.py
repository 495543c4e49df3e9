"""``flowscope live``: attach, track until SIGINT/SIGTERM (or ``--duration``), flush, report.

The settings come as one ``Config`` (file and flags merged by the CLI);
``flowscope.sensor.settings`` derives what the sensor runs with. Up-front
checks fail with one line and exit status 2; on the way out everything is
detached, every open flow is ended and written (reason ``shutdown``) and the
kernel's counters are reported on stderr. The exit status is 1 when the sensor
stopped because every interface disappeared (``sensor.reattach`` off).
"""

from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

from ..config import Config, UsageError
from ..output import event_mask, needs_zeek, open_output, set_interface_names
from ..output.table import summary_of
from .settings import check_limits, live_settings, slow_start_line, tunables

EXIT_OK = 0
EXIT_LOST = 1  # every monitored interface disappeared (the flows were still written)


def print_bpf(config: Config) -> int:
    """Print the program text and cflags the sensor would compile (``--print-bpf``)."""
    from .btf import BtfError
    from .loader import build_cflags, cflags_for, program_source

    tracker, sensor = live_settings(config)
    tun = tunables(sensor, tracker)
    print(program_source())
    try:
        flags = build_cflags(tun)
    except BtfError as exc:  # the sensor would start without the drop tracer
        flags = cflags_for(dict(tun, drops=0)) + [f"(drops off: {exc})"]
    print("// cflags: " + " ".join(flags))
    return EXIT_OK


def _checks(interfaces: Sequence[str], promisc: bool) -> None:
    """Capabilities, interfaces, BPF and BCC, before anything is opened."""
    from .preflight import PreflightError, preflight

    try:
        preflight(interfaces, promisc)
    except PreflightError as exc:  # one "live: ..." line per problem
        raise UsageError("\nflowscope: ".join(exc.problems)) from None


def run_live(config: Config, interfaces: Sequence[str], events: str = "ended",
             sweep_interval_flag: Optional[float] = None,
             output_file: Optional[str] = None, duration: Optional[float] = None) -> int:
    """Run the sensor on ``interfaces`` (default ``sensor.interfaces``); returns the exit status."""
    from ..keys import FiveTuple
    from ..tracker import FlowTracker
    from .attach import XdpBusy
    from .live import Sensor, StartError

    tracker_cfg, sconf = live_settings(config, sweep_interval_flag)
    if duration is not None and not duration > 0:
        raise UsageError("--duration: must be a positive number of seconds")
    interfaces = list(interfaces or sconf.interfaces)
    if not interfaces:
        raise UsageError("live: name at least one interface (-i IFACE or sensor.interfaces)")
    check_limits(config.sensor, config.tracker)  # as given: names max_flows when it sets the map
    _checks(interfaces, config.sensor.promisc)
    out, writer, fmt = open_output(config.output, output_file, config.tracker.sample_rate)
    tracker = FlowTracker(FiveTuple(), tracker_cfg, events=event_mask(fmt, events),
                          zeek=needs_zeek(fmt))
    sensor = Sensor(interfaces, tracker, writer, sconf)
    set_interface_names(writer, interfaces)  # iface values are positions in this list
    metrics_at = config.output.metrics
    if metrics_at:
        from ..metrics import MetricsServer, MetricsUnavailable

        try:
            sensor.metrics = MetricsServer(*metrics_at)
        except MetricsUnavailable as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"metrics {metrics_at[0]}:{metrics_at[1]}: "
                             f"{exc.strerror or exc}") from None
    stop = []
    status = EXIT_OK

    def _on_signal(signum, frame):
        stop.append(signum)

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        slow = slow_start_line(sconf, tracker_cfg)
        if slow:
            print(slow, file=sys.stderr, flush=True)
        try:
            sensor.start()
        except (StartError, XdpBusy) as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"live: cannot attach: {exc.strerror or exc}") from None
        print(f"Tracking flows on {sensor.describe()}... Ctrl-C to end.",
              file=sys.stderr, flush=True)
        for line in sensor.offload_notes():
            print(line, file=sys.stderr, flush=True)
        sensor.run(lambda: bool(stop), duration)
        if not sensor.attachments and not sconf.reattach and not stop:  # all interfaces gone
            status = EXIT_LOST
    finally:
        try:
            sensor.close()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            c = sensor.counters()
            if c:
                print(sensor.counters_line(c), file=sys.stderr, flush=True)
            writer.close(summary_of(tracker.stats) if fmt == "table" else None)
            if out is not sys.stdout:
                out.close()
            if sensor.metrics is not None:
                sensor.metrics.close()
    return status

"""The ``flowscope`` command line: ``flowscope pcap FILE...``, ``flowscope live -i IFACE``
and ``flowscope warmup``.

User errors (bad arguments, bad config, unreadable or corrupt captures) are
reported as one line on stderr, never as a traceback. Exit status: 0 = all
input read completely, 1 = some input could not be read (what was read is
still tracked, flushed and written), 2 = usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO, Optional, Sequence

from . import __version__
from .config import ConfigError, TrackerConfig, load_config

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2

EXAMPLES = """examples:
  flowscope pcap trace.pcap                  # table of ended flows + summary
  flowscope pcap --format jsonl -o flows.jsonl day1.pcapng day2.pcapng
  flowscope pcap --events all --format jsonl trace.pcap | jq .
  flowscope pcap --config sensor.yaml --max-flows 500000 big.pcap
  flowscope warmup                           # compile the engine, print the time
  sudo flowscope live -i eth0                # live: XDP ingress + TC egress, Ctrl-C to end
  sudo flowscope live -i eth0 -i eth1 --json --events lifecycle
"""

EXTRACTORS = ("five-tuple", "directional", "ip-pair", "mac-pair")


class UsageError(Exception):
    """A problem with the command line or the config: exit 2."""


def _err(msg: str) -> None:
    print(f"flowscope: {msg}", file=sys.stderr)


def _tracker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML config (see docs/config.md)")
    g.add_argument("--max-flows", type=int, metavar="N", help="flows held at once (default 100000)")
    for proto, default in (("tcp", 300), ("udp", 60), ("icmp", 30), ("other", 30)):
        g.add_argument(f"--{proto}-timeout", type=float, metavar="SEC",
                       help=f"{proto} idle timeout in seconds (default {default})")
    g.add_argument("--sweep-interval", type=float, metavar="SEC",
                   help="expire idle flows every SEC seconds of packet time (default 1)")
    g.add_argument("--infer-tcp-initiator", action="store_true", default=None,
                   help="a flow first seen as SYN+ACK is initiated by the other side")
    g.add_argument("--extractor", choices=EXTRACTORS, default="five-tuple",
                   help="what a flow is (default five-tuple, bidirectional)")
    o = p.add_argument_group("output")
    from .output import FORMATS

    o.add_argument("--format", choices=sorted(FORMATS), default=None,
                   help="table (default on a terminal), jsonl (JSON Lines, default otherwise), "
                        "eve (Suricata EVE flow records), ...; see docs/output.md")
    o.add_argument("--json", dest="format", action="store_const", const="jsonl",
                   help="same as --format jsonl")
    o.add_argument("--events", choices=("all", "lifecycle", "ended"), default="ended",
                   help="events to write: all, lifecycle (all but Packet) or ended (default)")
    o.add_argument("-o", "--output", metavar="FILE", help="write records to FILE instead of stdout")
    o.add_argument("--ipfix", metavar="HOST:PORT",
                   help="also export ended flows as IPFIX (RFC 7011, biflows) over UDP")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowscope",
        description="Passive flow and TCP session tracking.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pp = sub.add_parser("pcap", help="track flows in pcap/pcapng files",
                        description="Track flows in pcap/pcapng files, in order, as one trace.",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    pp.add_argument("files", nargs="+", metavar="FILE",
                    help="pcap or pcapng capture file; - (or a pipe) reads a stream, e.g. "
                         "tcpdump -w - | flowscope pcap -")
    _tracker_args(pp)
    pp.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    lp = sub.add_parser("live", help="track flows on network interfaces (root, BPF)",
                        description="Track flows live with XDP (ingress) and TC (egress) "
                                    "programs on each named interface; Ctrl-C (or SIGTERM) "
                                    "ends every open flow and exits. See docs/live.md.",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    lp.add_argument("-i", "--interface", action="append", metavar="IFACE", dest="interfaces",
                    help="interface to attach to (repeat for several; default: "
                         "sensor.interfaces in the config)")
    _tracker_args(lp)
    lp.add_argument("--xdp-mode", choices=("generic", "native"), default=None,
                    help="XDP attach mode (default generic; sensor.xdp_mode in the config)")
    lp.add_argument("--duration", type=float, metavar="SEC",
                    help="stop after SEC seconds as if interrupted")
    lp.add_argument("--metrics", metavar="HOST:PORT",
                    help="serve Prometheus metrics there (needs prometheus-client)")
    lp.add_argument("--print-bpf", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("warmup", help="compile the numba engine and report the time it took")
    return parser


def config_from_args(args: argparse.Namespace) -> TrackerConfig:
    """The config file (if any), then command-line flags on top; CLI sweeps every 1 s."""
    base = TrackerConfig(sweep_interval=1.0)
    cfg = load_config(args.config, base) if args.config else base
    changes = {}
    if args.max_flows is not None:
        changes["max_flows"] = args.max_flows
    for proto in ("tcp", "udp", "icmp", "other"):
        v = getattr(args, f"{proto}_timeout")
        if v is not None:
            changes[f"{proto}_timeout"] = v
    if args.sweep_interval is not None:
        changes["sweep_interval"] = args.sweep_interval
    if args.infer_tcp_initiator:
        changes["infer_tcp_initiator"] = True
    try:
        return cfg.replace(**changes)
    except ConfigError as exc:
        raise ConfigError(f"--{str(exc).replace('_', '-')}") from None


def _extractor(name: str):
    from .keys import FiveTuple, IpPair, MacPair

    return {"five-tuple": FiveTuple(), "directional": FiveTuple.directional(),
            "ip-pair": IpPair(), "mac-pair": MacPair()}[name]


class Progress:
    """A self-overwriting progress line on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.next = self.t0 + 0.5
        self.shown = False

    def update(self, name: str, done: int, total: int, packets: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.5
        pct = 100.0 * done / total if total else 0.0
        rate = packets / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{name[-30:]}: {pct:5.1f}%  {packets:,} packets  "
                         f"{rate / 1e6:.2f} M/s ")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


def make_writer(args: argparse.Namespace, out: IO[str], ipfix=None):
    """The writer for ``--format`` (plus an IPFIX exporter to ``ipfix`` = (host, port))
    and its format."""
    from .output import FORMATS, IpfixExporter, TeeWriter

    fmt = args.format or ("table" if out.isatty() else "jsonl")
    writer = FORMATS[fmt](out)
    if ipfix:
        host, port = ipfix
        try:
            exporter = IpfixExporter(host, port)
        except OSError as exc:
            raise UsageError(f"--ipfix {host}:{port}: {exc.strerror or exc}") from None
        writer = TeeWriter(writer, exporter)
    return writer, fmt


def event_mask_for(args: argparse.Namespace, fmt: str) -> int:
    from . import layout
    from .output import FORMATS

    mask = {"all": layout.EVMASK_ALL, "lifecycle": layout.EVMASK_LIFECYCLE,
            "ended": layout.EVMASK_ENDED}[args.events]
    if getattr(FORMATS[fmt], "ENDED_ONLY", False):
        mask = layout.EVMASK_ENDED
    return mask | layout.EVMASK_ENDED


def _open_output(path: Optional[str]) -> IO[str]:
    if not path or path == "-":
        return sys.stdout
    try:
        return open(path, "w", buffering=1 << 20)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write output: {exc.strerror or exc}") from None


def run_pcap(args: argparse.Namespace) -> int:
    from .output import FORMATS
    from .pcap import CaptureError, CaptureReader
    from .tracker import FlowTracker

    config = config_from_args(args)
    out, writer, fmt = open_writer(args, _output_settings(args, config))
    tracker = FlowTracker(_extractor(args.extractor), config, events=event_mask_for(args, fmt),
                          zeek=getattr(FORMATS[fmt], "NEEDS_ZEEK", False))
    progress = Progress(not args.no_progress)
    complete = True
    files_read = 0
    frames = 0
    try:
        for path in args.files:
            reader = None
            try:
                reader = CaptureReader(path, batch_size=8192, chunk_bytes=4 << 20)
                files_read += 1
                for batch in reader.prefetched():
                    for recs in tracker.process(batch):
                        writer.write_records(recs)
                    progress.update(path, reader.bytes_read, reader.file_size,
                                    frames + reader.frames)
                frames += reader.frames
            except CaptureError as exc:
                progress.clear()
                _err(str(exc))
                complete = False
                if reader is not None:
                    frames += reader.frames
    except KeyboardInterrupt:
        progress.clear()
        _err("interrupted: writing the flows read so far")
        complete = False
    finally:
        progress.clear()
        for recs in tracker.process_finish():
            writer.write_records(recs)
        summary = summary_of(tracker, files=files_read)
        writer.close(summary if fmt == "table" else None)
        if out is not sys.stdout:
            out.close()
        if fmt != "table" and sys.stderr.isatty():
            from .output.table import format_summary

            print(format_summary(summary), file=sys.stderr)
    return EXIT_OK if complete else EXIT_INCOMPLETE


CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _live_checks(ifnames: Sequence[str]) -> None:
    """Up-front checks of ``flowscope live``; UsageError with one line each."""
    import socket

    caps = _effective_caps()
    if os.geteuid() != 0 and not (
            caps & (1 << CAP_NET_ADMIN) and caps & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN))):
        raise UsageError("live: needs root (or CAP_BPF and CAP_NET_ADMIN)")
    for name in ifnames:
        try:
            socket.if_nametoindex(name)
        except OSError:
            raise UsageError(f"live: no interface named {name!r}") from None
    if not (os.path.exists("/proc/sys/net/core/bpf_jit_enable")
            or os.path.exists("/sys/fs/bpf")):
        raise UsageError("live: this kernel has no BPF support")
    try:
        from .sensor.loader import import_bcc

        import_bcc()
    except ImportError:
        raise UsageError("live: BCC is not installed (Debian: apt install python3-bpfcc)") \
            from None
    except (OSError, RuntimeError) as exc:  # kernel include dir could not be prepared
        raise UsageError(f"live: cannot prepare BPF compilation: {exc}") from None


def live_settings(args: argparse.Namespace):
    """(TrackerConfig without automatic sweeps, SensorConfig) from the config and the flags."""
    from .sensor.live import SensorConfigError, sensor_config_from_mapping

    config = config_from_args(args)
    try:
        sensor = sensor_config_from_mapping(config.extra.get("sensor"))
    except SensorConfigError as exc:
        where = f"{args.config}: " if args.config else ""
        raise ConfigError(f"{where}{exc}") from None
    changes = {}
    if args.sweep_interval is not None:
        changes["sweep_interval"] = args.sweep_interval
    elif "sweep_interval" not in (config.extra.get("sensor") or {}):
        changes["sweep_interval"] = config.sweep_interval or 1.0
    if args.xdp_mode:
        changes["xdp_mode"] = args.xdp_mode
    if changes:
        sensor = sensor_config_from_mapping(changes, sensor)
    if args.extractor != "five-tuple":
        raise UsageError("live: only --extractor five-tuple (the kernel keys flows that way)")
    if config.infer_tcp_initiator:
        raise UsageError("live: --infer-tcp-initiator is not supported (the kernel's TCP "
                         "mirror takes the first packet's sender as the initiator)")
    return config.replace(sweep_interval=None), sensor


def run_live(args: argparse.Namespace) -> int:
    import signal

    from .output import FORMATS
    from .sensor.live import Sensor
    from .tracker import FlowTracker

    config, sconf = live_settings(args)
    if args.print_bpf:
        from .sensor.loader import cflags_for, program_source

        tun = {"max_flows": sconf.map_size or config.max_flows,
               "ring_pages": max(1, sconf.ring_size // 4096)}
        print(program_source())
        print("// cflags: " + " ".join(cflags_for(tun)))
        return EXIT_OK
    if args.duration is not None and not args.duration > 0:
        raise UsageError("--duration: must be a positive number of seconds")
    interfaces = args.interfaces or list(sconf.interfaces)
    if not interfaces:
        raise UsageError("live: name at least one interface (-i IFACE or sensor.interfaces)")
    settings = _output_settings(args, config)
    _live_checks(interfaces)
    out, writer, fmt = open_writer(args, settings)
    tracker = FlowTracker(_extractor(args.extractor), config, events=event_mask_for(args, fmt),
                          zeek=getattr(FORMATS[fmt], "NEEDS_ZEEK", False))
    sensor = Sensor(interfaces, tracker, writer, sconf)
    sensor.writer_stream = out
    from .output.config import parse_address

    metrics_at = parse_address(args.metrics, "--metrics") if args.metrics else settings.metrics
    if metrics_at:
        from .metrics import MetricsServer, MetricsUnavailable

        try:
            sensor.metrics = MetricsServer(*metrics_at)
        except MetricsUnavailable as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"metrics {metrics_at[0]}:{metrics_at[1]}: "
                             f"{exc.strerror or exc}") from None
    stop = []

    def _on_signal(signum, frame):
        stop.append(signum)

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = EXIT_OK
    try:
        try:
            sensor.start()
        except OSError as exc:
            raise UsageError(f"live: cannot attach: {exc.strerror or exc}") from None
        print(f"Tracking flows on {', '.join(interfaces)}... Ctrl-C to end.",
              file=sys.stderr, flush=True)
        sensor.run(lambda: bool(stop), args.duration)
    finally:
        try:
            sensor.close()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            c = sensor.counters()
            if c:
                print(sensor.counters_line(c), file=sys.stderr, flush=True)
            writer.close(summary_of(tracker) if fmt == "table" else None)
            if out is not sys.stdout:
                out.close()
            if sensor.metrics is not None:
                sensor.metrics.close()
    return status


def open_writer(args: argparse.Namespace, settings):
    """(stream, writer, format): flags first, then the ``output:`` section of the config."""
    from .output.config import parse_address

    if not args.format and settings.format:
        args.format = settings.format
    ipfix = parse_address(args.ipfix, "--ipfix") if args.ipfix else settings.ipfix
    out = _open_output(args.output) if args.output or not settings.path else _rotating(settings)
    writer, fmt = make_writer(args, out, ipfix)
    return out, writer, fmt


def _output_settings(args: argparse.Namespace, config: TrackerConfig):
    """The ``output:`` section of the config (errors name the file and the key)."""
    from .output.config import output_settings

    try:
        return output_settings(config.extra.get("output"))
    except ConfigError as exc:
        where = f"{args.config}: " if args.config else ""
        raise ConfigError(f"{where}{exc}") from None


def _rotating(settings):
    """The output file of the ``output:`` section, rotated by size and/or time."""
    from .output.rotate import RotatingFile

    try:
        return RotatingFile(settings.path, max_bytes=settings.rotate_bytes,
                            interval_s=settings.rotate_seconds, keep=settings.keep)
    except OSError as exc:
        raise UsageError(f"{settings.path}: cannot write output: {exc.strerror or exc}") from None


def summary_of(tracker, files: int = 0) -> dict:
    """The figures of the table's closing lines."""
    s = tracker.stats
    return {
        "files": files, "packets": s.packets_matched + s.packets_unmatched,
        "unmatched": s.packets_unmatched, "flows": s.flows_created, "fin": s.ended_fin,
        "rst": s.ended_rst, "idle": s.ended_idle, "evicted": s.flows_evicted,
        "shutdown": s.ended_shutdown,
    }


def run_warmup(args: argparse.Namespace) -> int:
    from .tracker import warmup

    secs = warmup()
    print(f"flowscope engine ready: {secs:.2f} s to compile or load the numba kernels")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "pcap":
            return run_pcap(args)
        if args.command == "live":
            return run_live(args)
        return run_warmup(args)
    except (ConfigError, UsageError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

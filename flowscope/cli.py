"""The ``flowscope`` command line: ``flowscope pcap FILE...`` and ``flowscope warmup``.

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
from .config import ConfigError, TrackerConfig, config_from_mapping, load_config

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2

EXAMPLES = """examples:
  flowscope pcap trace.pcap                  # table of ended flows + summary
  flowscope pcap --format jsonl -o flows.jsonl day1.pcapng day2.pcapng
  flowscope pcap --events all --format jsonl trace.pcap | jq .
  flowscope pcap --config sensor.yaml --max-flows 500000 big.pcap
  flowscope warmup                           # compile the engine, print the time
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
    pp.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng capture file")
    _tracker_args(pp)
    pp.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
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


def parse_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port); UsageError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ipfix: expected HOST:PORT, got {value!r}")
    return host, int(port)


def make_writer(args: argparse.Namespace, out: IO[str]):
    """The writer for ``--format`` (plus an IPFIX exporter with ``--ipfix``) and its format."""
    from .output import FORMATS, IpfixExporter, TeeWriter

    fmt = args.format or ("table" if out.isatty() else "jsonl")
    writer = FORMATS[fmt](out)
    if args.ipfix:
        host, port = parse_hostport(args.ipfix)
        try:
            exporter = IpfixExporter(host, port)
        except OSError as exc:
            raise UsageError(f"--ipfix {args.ipfix}: {exc.strerror or exc}") from None
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
    out = _open_output(args.output)
    writer, fmt = make_writer(args, out)
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
                reader = CaptureReader(path, batch_size=16384, chunk_bytes=4 << 20)
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
        s = tracker.stats
        summary = {
            "files": files_read, "packets": s.packets_matched + s.packets_unmatched,
            "unmatched": s.packets_unmatched, "flows": s.flows_created, "fin": s.ended_fin,
            "rst": s.ended_rst, "idle": s.ended_idle, "evicted": s.flows_evicted,
            "shutdown": s.ended_shutdown,
        }
        writer.close(summary if fmt == "table" else None)
        if out is not sys.stdout:
            out.close()
        if fmt != "table" and sys.stderr.isatty():
            from .output.table import format_summary

            print(format_summary(summary), file=sys.stderr)
    return EXIT_OK if complete else EXIT_INCOMPLETE


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

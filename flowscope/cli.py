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
from typing import Optional, Sequence

from . import __version__
from .config import Config, ConfigError, TrackerConfig, flag_error, load, section_from_mapping
from .offline import EXIT_OK, EXIT_USAGE, err

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
                   help="also export ended flows as IPFIX (RFC 7011) over UDP")
    o.add_argument("--ipfix-records", choices=("biflow", "uniflow"), default=None,
                   help="one RFC 5103 biflow record per flow (default) or one record per "
                        "direction (nfdump shows both directions' TCP flags)")


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
    lp.add_argument("--xdp-mode", choices=("auto", "generic", "native"), default=None,
                    help="XDP attach mode (default auto: native if the driver has it, else "
                         "generic; sensor.xdp_mode in the config)")
    lp.add_argument("--duration", type=float, metavar="SEC",
                    help="stop after SEC seconds as if interrupted")
    lp.add_argument("--metrics", metavar="HOST:PORT",
                    help="serve Prometheus metrics there (needs prometheus-client)")
    lp.add_argument("--print-bpf", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("warmup", help="compile the numba engine and report the time it took")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (if any), then the command-line flags on top, through the one schema.

    The CLI sweeps idle flows every second of packet time unless told otherwise.
    """
    base = TrackerConfig(sweep_interval=1.0)
    cfg = load(args.config, base) if args.config else Config(tracker=base)
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
        tracker = cfg.tracker.replace(**changes)
    except ConfigError as exc:
        raise flag_error(exc) from None
    out = {}
    if args.format:
        out["format"] = args.format
    if args.ipfix:
        out["ipfix"] = args.ipfix
    if args.ipfix_records:
        out["ipfix_records"] = args.ipfix_records
    if getattr(args, "metrics", None):
        out["metrics"] = args.metrics
    sensor = {}
    if getattr(args, "xdp_mode", None):
        sensor["xdp_mode"] = args.xdp_mode
    try:
        output = section_from_mapping("output", out, cfg.output)
    except ConfigError as exc:
        raise flag_error(exc, "output") from None
    sensor_cfg = section_from_mapping("sensor", sensor, cfg.sensor)  # argparse checked the choice
    return Config(tracker=tracker, sensor=sensor_cfg, output=output)


def _extractor(name: str):
    from .keys import FiveTuple, IpPair, MacPair

    return {"five-tuple": FiveTuple(), "directional": FiveTuple.directional(),
            "ip-pair": IpPair(), "mac-pair": MacPair()}[name]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "warmup":
        from .warmup import warmup

        secs = warmup()
        print(f"flowscope engine ready: {secs:.2f} s to compile or load the numba kernels")
        return EXIT_OK
    config = config_from_args(args)
    if args.command == "pcap":
        from .offline import run_pcap

        return run_pcap(config, args.files, args.events, _extractor(args.extractor),
                        args.output, not args.no_progress)
    from .sensor import run as live

    if args.print_bpf:
        return live.print_bpf(config)
    return live.run_live(config, args.interfaces, args.events, args.extractor,
                         args.sweep_interval, args.output, args.duration)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except ConfigError as exc:
        err(str(exc))
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

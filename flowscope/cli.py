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
import shutil
import sys
import textwrap
from typing import Optional, Sequence

# before numpy is imported: flowscope does no linear algebra, and numpy's OpenBLAS would start
# a thread per core that spins at start-up, taking a core from the reader and the engine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from . import __version__  # noqa: E402 - after the environment is set
from .config import (SCHEMA, XDP_MODES, Config, ConfigError, OutputSettings,  # noqa: E402
                     SensorConfig, TrackerConfig, flag_error, load, section_from_mapping)
from .offline import EXIT_OK, EXIT_USAGE, err  # noqa: E402

#: Widest ``--help`` line, whatever the terminal's width (narrower terminals get narrower help).
HELP_WIDTH = 79

#: The CLI sweeps idle flows every this many seconds of packet time (the library: only on
#: ``sweep()``); ``flowscope live`` syncs its flow map as often unless the config says otherwise.
SWEEP_INTERVAL = 1.0

#: Examples in each command's ``--help``; ``flowscope --help`` shows them all.
EXAMPLES = {
    "pcap": """\
  flowscope pcap trace.pcap              # table of ended flows + summary
  flowscope pcap --format jsonl -o flows.jsonl day1.pcapng day2.pcapng
  flowscope pcap --events all --format jsonl trace.pcap | jq .
  flowscope pcap --config sensor.yaml --max-flows 500000 big.pcap
  tcpdump -i eth0 -w - | flowscope pcap --json -     # a stream on stdin
""",
    "live": """\
  sudo flowscope live -i eth0            # XDP in + TC out; Ctrl-C to end
  sudo flowscope live -i eth0 -i eth1 --json --events lifecycle
  sudo flowscope live --config sensor.yaml --metrics 127.0.0.1:9464
""",
    "warmup": """\
  flowscope warmup                       # compile the engine, print the time
""",
}

EXTRACTORS = ("five-tuple", "directional", "ip-pair", "mac-pair")


def _examples(*commands: str) -> str:
    return "examples:\n" + "".join(EXAMPLES[c] for c in commands)


class _HelpFormatter(argparse.HelpFormatter):
    """Help at most ``HELP_WIDTH`` columns wide; indented lines (examples) stay as written."""

    def __init__(self, prog: str) -> None:
        width = min(shutil.get_terminal_size().columns - 2, HELP_WIDTH)
        super().__init__(prog, width=width, max_help_position=26)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # never at a hyphen: prometheus-client, five-tuple and --flags stay whole
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            keep = not line.strip() or line.startswith(" ")
            out.append(indent + line if keep else super()._fill_text(line, width, indent))
        return "\n".join(out) + "\n"


def _flag(section: str, field: str) -> str:
    """The command-line flag of a config key (``config.SCHEMA`` is its one home)."""
    return next(k.flag for k in SCHEMA[section] if k.field == field)


def _tracker_args(p: argparse.ArgumentParser, live: bool) -> None:
    """Tracking and output options; ``live`` leaves out what the kernel side cannot do."""
    d = TrackerConfig()
    g = p.add_argument_group("tracking")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML config (see docs/config.md)")
    g.add_argument(_flag("", "max_flows"), type=int, metavar="N",
                   help=f"flows held at once (default {d.max_flows})")
    for key in SCHEMA[""]:
        if key.path.startswith("timeouts."):
            proto = key.path.split(".", 1)[1]
            g.add_argument(key.flag, type=float, metavar="SEC", dest=key.field,
                           help=f"{proto} idle timeout in seconds (default "
                                f"{getattr(d, key.field):g})")
    g.add_argument(_flag("", "sample_rate"), type=int, metavar="N",
                   help="keep 1 flow in N, chosen by a hash of the flow's key (both "
                        "directions together; default: every flow)")
    g.add_argument(_flag("", "active_timeout"), type=float, metavar="SEC",
                   help="flows open longer than SEC seconds get an interim 'update' "
                        "record every SEC seconds (none unless given)")
    g.add_argument(_flag("", "key_icmp"), action="store_true", default=None,
                   help="key ICMP by type and paired type or code, as Zeek does "
                        "(default: ports 0)")
    g.add_argument(_flag("", "decapsulate"), dest="decapsulate", action="store_false",
                   default=None, help="count tunnels as their outer flows only (do not "
                                      "decapsulate VXLAN, GRE, ...)")
    g.add_argument(_flag("", "vxlan_port"), type=int, metavar="PORT",
                   help=f"UDP port of VXLAN (default {d.vxlan_port})")
    g.add_argument(_flag("", "geneve_port"), type=int, metavar="PORT",
                   help=f"UDP port of Geneve (default {d.geneve_port})")
    if live:
        g.add_argument(_flag("sensor", "sweep_interval"), type=float, metavar="SEC",
                       help="sync the kernel's flow map and end idle flows every SEC seconds "
                            "(default: sensor.sweep_interval or sweep_interval in the "
                            f"config, else {SWEEP_INTERVAL:g})")
    else:
        g.add_argument(_flag("", "sweep_interval"), type=float, metavar="SEC",
                       help="expire idle flows every SEC seconds of packet time "
                            f"(default {SWEEP_INTERVAL:g})")
        g.add_argument(_flag("", "infer_tcp_initiator"), action="store_true", default=None,
                       help="a flow first seen as SYN+ACK is initiated by the other side")
        g.add_argument(_flag("", "verify_checksums"), action="store_true", default=None,
                       help="verify IP/TCP/UDP/ICMP checksums (Zeek's C/c history letters)")
        g.add_argument("--extractor", choices=EXTRACTORS, default=EXTRACTORS[0],
                       help=f"what a flow is (default {EXTRACTORS[0]}, bidirectional)")
    o = p.add_argument_group("output")
    from .config import IPFIX_RECORDS
    from .layout import EVENT_MASKS
    from .output import FORMATS

    o.add_argument(_flag("output", "format"), choices=sorted(FORMATS), default=None,
                   help="table (default on a terminal), jsonl (JSON Lines, default "
                        "otherwise), eve (Suricata EVE flow records), ...; see "
                        "docs/output.md")
    o.add_argument("--json", dest="format", action="store_const", const="jsonl",
                   help="same as --format jsonl")
    o.add_argument("--events", choices=tuple(EVENT_MASKS), default="ended",
                   help="events to write: all, lifecycle (all but Packet) or ended "
                        "(default: %(default)s)")
    o.add_argument(_flag("output", "path"), "--output", metavar="FILE", dest="output",
                   help="write records to FILE instead of stdout")
    o.add_argument(_flag("output", "ipfix"), metavar="HOST:PORT",
                   help="also export ended flows as IPFIX (RFC 7011) over UDP")
    o.add_argument(_flag("output", "ipfix_records"), choices=IPFIX_RECORDS, default=None,
                   help=f"{OutputSettings().ipfix_records} (default): one RFC 5103 biflow "
                        "record per flow; uniflow: one record per direction (nfdump then "
                        "shows both directions' TCP flags)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowscope",
        description="Passive flow and TCP session tracking.",
        epilog=_examples(*EXAMPLES),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pp = sub.add_parser("pcap", help="track flows in pcap/pcapng files",
                        description="Track flows in pcap/pcapng files, in order, as one trace.",
                        epilog=_examples("pcap"), formatter_class=_HelpFormatter)
    pp.add_argument("files", nargs="+", metavar="FILE",
                    help="pcap or pcapng capture file; - (or a pipe) reads a stream, e.g. "
                         "tcpdump -w - | flowscope pcap -")
    _tracker_args(pp, live=False)
    pp.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    s = SensorConfig()
    lp = sub.add_parser("live", help="track flows on network interfaces (root, BPF)",
                        description="Track flows live with XDP or TC (ingress) and TC (egress) "
                                    "programs on each named interface; Ctrl-C (or SIGTERM) "
                                    "ends every open flow and exits. See docs/live.md.",
                        epilog=_examples("live"), formatter_class=_HelpFormatter)
    lp.add_argument(_flag("sensor", "interfaces"), "--interface", action="append",
                    metavar="IFACE", dest="interfaces",
                    help="interface to attach to (repeat for several; default: "
                         "sensor.interfaces in the config)")
    _tracker_args(lp, live=True)
    lp.add_argument(_flag("sensor", "xdp_mode"), choices=XDP_MODES, default=None,
                    help=f"XDP attach mode; generic or native also make ingress XDP "
                         f"(default: sensor.xdp_mode, else {s.xdp_mode})")
    lp.add_argument(_flag("sensor", "promisc"), dest="promisc", action="store_false",
                    default=None, help="leave the interfaces' promiscuous mode as it is "
                                       "(default: on while attached, as tcpdump does)")
    lp.add_argument("--duration", type=float, metavar="SEC",
                    help="stop after SEC seconds as if interrupted")
    lp.add_argument(_flag("output", "metrics"), metavar="HOST:PORT",
                    help="serve Prometheus metrics there (needs prometheus-client; "
                         "see docs/metrics.md)")
    lp.add_argument("--print-bpf", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("warmup", help="compile the numba engine and report the time it took",
                   description="Compile (or load from numba's cache) every engine kernel "
                               "and print how long it took.",
                   epilog=_examples("warmup"), formatter_class=_HelpFormatter)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (if any), then the command-line flags on top, through the one schema.

    The CLI sweeps idle flows every second of packet time unless told otherwise.
    """
    base = TrackerConfig(sweep_interval=SWEEP_INTERVAL)
    cfg = load(args.config, base) if args.config else Config(tracker=base)
    changes = {}
    if args.max_flows is not None:
        changes["max_flows"] = args.max_flows
    for key in SCHEMA[""]:
        if key.path.startswith("timeouts.") and getattr(args, key.field) is not None:
            changes[key.field] = getattr(args, key.field)
    if args.sweep_interval is not None:
        changes["sweep_interval"] = args.sweep_interval
    if args.sample_rate is not None:
        changes["sample_rate"] = args.sample_rate
    if args.active_timeout is not None:
        changes["active_timeout"] = args.active_timeout
    if getattr(args, "infer_tcp_initiator", None):
        changes["infer_tcp_initiator"] = True
    if args.key_icmp:
        changes["key_icmp"] = True
    if getattr(args, "verify_checksums", None):
        changes["verify_checksums"] = True
    if getattr(args, "decapsulate", None) is False:
        changes["decapsulate"] = False
    for name in ("vxlan_port", "geneve_port"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
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
    if getattr(args, "promisc", None) is False:
        sensor["promisc"] = False
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

        from . import _kernels

        secs = warmup()
        if _kernels.MODE == "aot":
            print(f"flowscope engine ready: {secs:.2f} s to load the ahead-of-time kernels")
        else:
            print(f"flowscope engine ready: {secs:.2f} s to compile or load the numba kernels "
                  f"(JIT: {_kernels.JIT_REASON})")
        return EXIT_OK
    config = config_from_args(args)
    if args.command == "pcap":
        from .offline import run_pcap

        return run_pcap(config, args.files, args.events, _extractor(args.extractor),
                        args.output, not args.no_progress)
    from .sensor import run as live

    if args.print_bpf:
        return live.print_bpf(config)
    return live.run_live(config, args.interfaces, args.events,
                         sweep_interval_flag=args.sweep_interval, output_file=args.output,
                         duration=args.duration)


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

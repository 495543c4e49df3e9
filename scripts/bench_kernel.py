#!/usr/bin/env python3
"""Per-packet cost of the sensor's XDP and TC programs against a floor program (root needed).

Everything runs through BPF_PROG_TEST_RUN and uses the kernel-reported ns per run:
  established  one packet of an existing TCP flow (a pure ACK: no event), repeat >= 1e6,
               --rounds calls each of the build and of the floor, interleaved (ABBA: a
               drift of the machine over the run falls on both); the ns are the medians of
               each, the ratio the median of the per-round ratios;
  udp stream   the same for a 60-byte UDP datagram of an existing flow (bench_live.py's
               frames);
  new-flow     --new distinct flows, one run each (repeat=1), median;
  churn        --flows (default 100 k) flows created, then one run per flow in shuffled
               order (each touches a cold map entry), median.
The floor is built in the same run from bpf/fs_parse.h: the same parser plus one per-CPU
hash update keyed by the (non-canonical) 5-tuple, with the same map size. The established
case is also measured on a build without TCP sequence tracking (-DFS_TCP_SEQ=0, ``seq off``),
the cost of retransmission / out-of-order / zero-window counting, and on one without the
established fast path (-DFS_FAST_PATH=0, ``no fast``: every pure ACK takes the full path), as
ratios to the floor.

Usage: sudo .venv/bin/python scripts/bench_kernel.py [--repeat 1000000] [--flows 100000]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowscope.sensor import loader  # noqa: E402
from flowscope.sensor.ring import RingReader  # noqa: E402

FLOOR = r"""
struct floor_key {
	__u64 s_hi, s_lo, d_hi, d_lo;
	__u16 sp, dp;
	__u8 l3, proto, _pad[2];
};
BPF_PERCPU_HASH(floor_flows, struct floor_key, __u64, FS_MAX_FLOWS);

static __always_inline void floor_body(void *data, void *data_end)
{
	struct fs_pkt p = {};
	if (parse_frame(data, data_end, &p) < 0)
		return;
	struct floor_key k = {};
	k.s_hi = p.src_hi; k.s_lo = p.src_lo; k.d_hi = p.dst_hi; k.d_lo = p.dst_lo;
	k.sp = p.sport; k.dp = p.dport; k.l3 = p.l3; k.proto = p.proto;
	__u64 *v = floor_flows.lookup(&k);
	if (v) {
		*v += 1;
	} else {
		__u64 one = 1;
		floor_flows.update(&k, &one);
	}
}

int floor_xdp(struct xdp_md *ctx)
{
	floor_body((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	return XDP_PASS;
}

int floor_tc(struct __sk_buff *skb)
{
	floor_body((void *)(long)skb->data, (void *)(long)skb->data_end);
	return TC_ACT_OK;
}
"""


def frame(i: int, flags: int = 0x10) -> bytes:
    """64-byte Ethernet/IPv4/TCP frame of flow number i (10.x.y.z:port -> 10.255.0.1:80)."""
    src = ipaddress.IPv4Address(0x0A000000 + (i >> 10) + 1).packed
    dst = ipaddress.IPv4Address("10.255.0.1").packed
    tcp = struct.pack("!HHIIBBHHH", 1024 + (i & 1023), 80, 1, 1, 5 << 4, flags, 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    f = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + tcp
    return f + b"\0" * (64 - len(f))


def build_floor(bcc, max_flows: int):
    """The floor program's BPF module (``floor_xdp``, ``floor_tc``), its map sized like the
    flowscope build's."""
    src = (loader.inline_sources(["fs_parse.h"])
           + "#include <uapi/linux/pkt_cls.h>\n" + FLOOR)
    return bcc.BPF(text=src.encode(), cflags=loader.cflags_for({"max_flows": max_flows})
                   + [f"-DFS_MAX_FLOWS={max_flows}"])


def udp_frame() -> bytes:
    """The 60-byte Ethernet/IPv4/UDP frame bench_live.py sends (18 bytes of payload)."""
    from bench_live import _frames

    return _frames({"src_mac": "02:00:00:00:00:02", "dst_mac": "02:00:00:00:00:01",
                    "src_ip": "10.0.0.1", "dst_ip": "10.255.0.1", "port": 9999, "flows": 1})[0]


def paired(fd: int, floor_fd: int, f: bytes, repeat: int,
           rounds: int) -> tuple[float, float, float]:
    """``fd`` and the floor on frame ``f``, ``repeat`` runs per call, ``rounds`` calls each,
    interleaved in ABBA order: (median ns of fd, median ns of the floor, median of the
    per-round ratios fd / floor). Each round's pair shares the machine's state of the
    moment, which a ratio of two medians taken apart does not (this VM drifts by tens of
    per cent within seconds)."""
    for x in (fd, floor_fd):
        loader.prog_test_run(x, f)  # create the flow / warm up
    a, b, r = [], [], []
    for i in range(rounds):
        got = {x: loader.prog_test_run(x, f, repeat)[1]
               for x in ((fd, floor_fd) if i % 2 == 0 else (floor_fd, fd))}
        a.append(got[fd])
        b.append(got[floor_fd])
        r.append(got[fd] / max(1, got[floor_fd]))
    return statistics.median(a), statistics.median(b), statistics.median(r)


def median_each(fd: int, frames, ring: RingReader | None) -> float:
    d = []
    for j, f in enumerate(frames):
        d.append(loader.prog_test_run(fd, f)[1])
        if ring is not None and j % 8192 == 8191:
            ring.drain_all()
    if ring is not None:
        ring.drain_all()
    return statistics.median(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new", type=int, default=20_000)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--max-flows", type=int, default=131072)
    ap.add_argument("-D", dest="tunables", action="append", default=[], metavar="NAME=VALUE",
                    help="loader tunable for the flowscope build, e.g. -D atomic_counters=0")
    args = ap.parse_args()

    tun = {"max_flows": args.max_flows}
    tun.update(dict(t.split("=", 1) for t in args.tunables))
    m = loader.load(tun)
    m_off = loader.load({**tun, "tcp_seq": 0})
    m_slow = loader.load(tun, extra_cflags=["-DFS_FAST_PATH=0"])
    bcc = loader.import_bcc()
    fb = build_floor(bcc, args.max_flows)
    floor = {"XDP": fb.load_func(b"floor_xdp", bcc.BPF.XDP).fd,
             "TC": fb.load_func(b"floor_tc", bcc.BPF.SCHED_CLS).fd}
    ours = {"XDP": m.xdp_fd, "TC": m.tc_fd}
    ours_off = {"XDP": m_off.xdp_fd, "TC": m_off.tc_fd}
    ours_slow = {"XDP": m_slow.xdp_fd, "TC": m_slow.tc_fd}
    seq_rows = []
    ring = RingReader(m.events_fd)
    rng = random.Random(7)
    rows = []
    try:
        for hook in ("XDP", "TC"):
            m.bpf[b"fs_flows"].clear()
            fb[b"floor_flows"].clear()
            f = frame(0)
            est = paired(ours[hook], floor[hook], f, args.repeat, args.rounds)
            rows.append((hook, "established", *est))
            rows.append((hook, "udp stream",
                         *paired(ours[hook], floor[hook], udp_frame(), args.repeat,
                                 args.rounds)))
            m_off.bpf[b"fs_flows"].clear()
            m_slow.bpf[b"fs_flows"].clear()
            seq_rows.append((hook, paired(ours_off[hook], floor[hook], f, args.repeat,
                                          args.rounds), est,
                             paired(ours_slow[hook], floor[hook], f, args.repeat,
                                    args.rounds)))
            m.bpf[b"fs_flows"].clear()
            fb[b"floor_flows"].clear()
            frames = [frame(i) for i in range(1, args.new + 1)]
            new = (median_each(ours[hook], frames, ring), median_each(floor[hook], frames, None))
            rows.append((hook, "new-flow", *new, new[0] / new[1]))
            m.bpf[b"fs_flows"].clear()
            fb[b"floor_flows"].clear()
            frames = [frame(i) for i in range(1, args.flows + 1)]
            for j, f in enumerate(frames):  # populate
                loader.prog_test_run(ours[hook], f)
                loader.prog_test_run(floor[hook], f)
                if j % 8192 == 8191:
                    ring.drain_all()
            ring.drain_all()
            rng.shuffle(frames)
            churn = (median_each(ours[hook], frames, ring),
                     median_each(floor[hook], frames, None))
            rows.append((hook, f"churn {args.flows // 1000}k", *churn, churn[0] / churn[1]))
        from flowscope.sensor import maps

        c = maps.counters_dict(m.counters_fd)
    finally:
        ring.close()
        fb.cleanup()
        m.close()
        m_off.close()
        m_slow.close()
    print(f"{'hook':<5}{'case':<14}{'flowscope ns':>14}{'floor ns':>10}{'ratio':>8}")
    for hook, case, a, b, ratio in rows:
        print(f"{hook:<5}{case:<14}{a:>14.0f}{b:>10.0f}{ratio:>8.2f}")
    print(f"\n{'hook':<5}{'established':<14}{'seq off':>9}{'seq on':>8}{'floor':>7}"
          f"{'off/floor':>10}{'on/floor':>10}{'on/off':>8}{'no fast':>9}{'/floor':>8}")
    for hook, off, on, slow in seq_rows:  # each (ns, floor ns, ratio), paired with the floor
        print(f"{hook:<5}{'':<14}{off[0]:>9.0f}{on[0]:>8.0f}{on[1]:>7.0f}{off[2]:>10.2f}"
              f"{on[2]:>10.2f}{on[2] / off[2]:>8.2f}{slow[0]:>9.0f}{slow[2]:>8.2f}")
    print(f"counters: map_full={c['map_full']} ring_full={c['ring_full']} "
          f"events={c['events']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

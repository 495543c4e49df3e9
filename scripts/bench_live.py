#!/usr/bin/env python3
"""Live sensor throughput against baselines measured in the same run (root, BPF, 2+ CPUs).

Part 1 - ring buffer drain, sustained, producer and consumer on different CPUs.
  A small BPF program (same ``fs_events`` ring and ``fs_counters`` map as the sensor, built
  from bpf/fs_maps.h with the sensor's default ring size) reserves and submits ``fs_event``
  records; BPF_PROG_TEST_RUN with a large repeat runs it in a forked child pinned to CPU 1,
  and reserve failures are counted in fs_counters (RING_FULL). The consumer runs here, pinned
  to CPU 0, in two producer modes: "saturating" (as fast as the producer can) and "paced"
  (the program keeps to --rate events/s by bpf_ktime_get_ns()). Consumers:
    (a) flowscope's drain path: RingReader.wait + RingReader.drain into a batch of
        SensorConfig().batch records, up to 64 batches per wake-up, as Sensor.poll does;
    (b) BCC's Python callback: open_ring_buffer + ring_buffer_poll, the callback only counts
        and returns -1 after one batch (libbpf's loop does not return under load otherwise);
  Also shown: each consumer draining a full ring on one CPU with no producer running.
  Baseline: (b).

Part 2 - live veth throughput.
  A netns + veth pair (GSO/TSO/GRO off, IPv6 off so no ND/MLD frames), a sender in the netns
  pinned to CPU 1 writing 60-byte UDP frames with sendmmsg over an AF_PACKET socket
  (PACKET_QDISC_BYPASS), or with ``--sender xdp`` the kernel's XDP traffic generator:
  BPF_PROG_TEST_RUN of a program that redirects each frame into the veth, in live-frames mode
  (BPF_F_TEST_XDP_LIVE_FRAMES), which reaches 2-2.5 Mpps here where the socket reaches
  0.3-0.8, and holds its rate steadily; such frames reach our end through its NAPI (GRO on)
  with an XDP-sized headroom, so generic XDP needs no copy on this path. Packets received =
  rx_packets of our veth end. What receives them
  (--sink): ``full``, a UDP socket on our side that never reads (the stack takes every frame
  up to the socket queue and drops it there, no ICMP: a drop storm, and the sensor's drop
  tracer sees each drop); ``read``, the same socket drained by a busy recvmmsg loop pinned to
  CPU 0 (a host whose application keeps up: nothing is dropped); ``mirror``, frames addressed
  to another MAC, which the stack frees in ip_rcv as a host on a mirror port does (reason
  OTHERHOST, which the drop tracer skips).
  Separate runs, alternating for --rounds rounds: none (baseline) and ``flowscope live -i <veth>
  --format jsonl`` in each mode of --xdp-modes (default auto and generic: auto is the default
  config, which attaches a tcx ingress link on veth; generic and native pass --xdp-mode, so
  XDP in that mode; tc runs it with ``sensor.ingress: tc``; nodrops runs generic XDP with
  ``sensor.drops: false``, no drop tracer; tcx-nodrops the default config with
  ``sensor.drops: false``) as a subprocess pinned to CPU 0; or, with no sensor process, only
  programs on both tcx hooks (``empty``: programs that return at once; ``floor``: the floor
  program of bench_kernel.py, the parser and one per-CPU counter; ``programs``: flowscope's TC
  programs as the sensor loads them, without the drop tracer), the ladder from nothing to the
  whole sensor; for flowscope,
  the ended flows' packets of that traffic are checked against what the interface received
  while the sensor was attached, and the sensor
  process's CPU time (utime + stime, /proc/PID/stat) over the sender run is divided by the
  packets received: its CPU cost per packet at that rate.
  The rate on this kind of VM jumps between two levels (about 0.7 and 1.25 Mpps here) for
  seconds at a time, whatever runs, so one more measurement alternates short slices inside
  one sender run: nothing attached / empty XDP (generic) + tcx programs / empty programs on
  both tcx hooks / flowscope's own XDP (generic) + TC programs / flowscope's TC programs on
  both tcx hooks / flowscope's XDP in native (driver) mode + TC, each slice compared with the
  unattached slices around it (no drop tracer in the slices).

Everything created here (netns, veth pair, programs, child processes) is removed on exit,
Ctrl-C or error. Default run time about 2 minutes; --quick about 30 s.

Usage: sudo .venv/bin/python scripts/bench_live.py [--quick] [--rate 10e6] [--rounds 3]
       sudo .venv/bin/python scripts/bench_live.py --only veth --sender xdp --sink mirror
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRODUCER_CPU = 1
CONSUMER_CPU = 0
NPER = 4  # events per program run (amortises the test-run loop and the clock read)
PR_SET_PDEATHSIG = 1
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
UDP_PORT = 9999
FRAME_LEN = 60

PRODUCER = r"""
#include <uapi/linux/pkt_cls.h>

/* rate = 0: produce NPER events per run; else keep attempts <= rate * (now - t0). */
struct bench_state {
	__u64 t0;
	__u64 attempts;
	__u64 rate;
	__u64 _pad;
};
BPF_ARRAY(bench_state, struct bench_state, 1);

static __always_inline void bench_count(__u32 idx, __u64 n)
{
	__u64 *v = fs_counters.lookup(&idx);
	if (v)
		*v += n;
}

int bench_produce(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct bench_state *s = bench_state.lookup(&zero);
	if (!s)
		return TC_ACT_OK;
	__u64 now = bpf_ktime_get_ns();
	__u64 rate = s->rate, todo = NPER, n0 = s->attempts;
	if (rate) {
		if (!s->t0)
			s->t0 = now;
		__u64 due = (now - s->t0) * rate / 1000000000ULL;
		if (n0 >= due)
			return TC_ACT_OK;
		if (due - n0 < todo)
			todo = due - n0;
	}
	s->attempts = n0 + todo;
	__u64 ok = 0, full = 0;
#pragma unroll
	for (int i = 0; i < NPER; i++) {
		if (i >= todo)
			break;
		__u64 n = n0 + i;
		struct fs_event *e = fs_events.ringbuf_reserve(sizeof(struct fs_event));
		if (!e) {
			full++;
			continue;
		}
		/* every field written, as fs_emit() does: a UDP flow's NEW event */
		e->key.a_hi = 0;
		e->key.a_lo = 0x0a000001;
		e->key.b_hi = 0;
		e->key.b_lo = 0x0a000002 + (n & 1023);
		e->key.port_a = 1024 + (n & 4095);
		e->key.port_b = 53;
		e->key.l3 = FS_L3_IPV4;
		e->key.proto = 17;
		*(__u16 *)e->key._pad = 0;
		e->ts_ns = now;
		e->pkts[0] = n;
		e->pkts[1] = 0;
		e->bytes[0] = n * 60;
		e->bytes[1] = 0;
		e->payload[0] = n * 18;
		e->payload[1] = 0;
		e->seq = 0;
		e->ack = 0;
		e->frame_len = 60;
		e->payload_len = 18;
		e->gen = 0;
		e->ifindex = 1;
		e->window = 0;
		e->dir = FS_DIR_FWD;
		e->tcp_flags = 0;
		e->reason = FS_EVR_NEW;
		e->first_dir = FS_DIR_FWD;
		e->state = 0;
		e->hist_len = 0;
		e->hook = FS_HOOK_XDP;
		e->pflags = FS_PF_PORTS;
		e->icmp_type = 0;
		e->icmp_code = 0;
		*(__u32 *)e->_pad = 0;
		fs_events.ringbuf_submit(e, 0);
		ok++;
	}
	if (ok)
		bench_count(FS_CNT_EVENTS, ok);
	if (full)
		bench_count(FS_CNT_RING_FULL, full);
	return TC_ACT_OK;
}
"""

EMPTY_PROGS = r"""
#include <uapi/linux/pkt_cls.h>
int empty_xdp(struct xdp_md *ctx) { return XDP_PASS; }
int empty_tc(struct __sk_buff *skb) { return TC_ACT_OK; }
"""

_libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Interrupted(Exception):
    """SIGTERM/SIGHUP: unwind through every ``finally`` like Ctrl-C does."""


def _on_term(signum, frame):
    raise Interrupted(f"signal {signum}")


def _sh(*args, check=True, timeout=20):
    return subprocess.run(list(args), check=check, capture_output=True, text=True,
                          timeout=timeout)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# ============================================================================================
# Part 1: ring buffer drain
# ============================================================================================


class RingBench:
    """The producer program, its ring and counters, and the child process that runs it."""

    def __init__(self):
        from flowscope.sensor import loader
        from flowscope.config import SensorConfig

        self.loader = loader
        bcc = loader.import_bcc()
        sc = SensorConfig()
        self.ring_size = sc.ring_size
        self.batch = sc.batch
        src = (loader.inline_sources(["fs_maps.h"]) + PRODUCER + "\n"
               + loader.layout_asserts())
        tun = {"max_flows": 1024, "ring_pages": max(1, sc.ring_size // 4096)}
        self.bpf = bcc.BPF(text=src.encode(),
                           cflags=loader.cflags_for(tun) + [f"-DNPER={NPER}"])
        self.prog_fd = self.bpf.load_func(b"bench_produce", bcc.BPF.SCHED_CLS).fd
        self.events_fd = self.bpf.get_table(b"fs_events").get_fd()
        self.counters_fd = self.bpf.get_table(b"fs_counters").get_fd()
        self.state = self.bpf.get_table(b"bench_state")
        self.frame = bytes(FRAME_LEN)
        self.child = 0

    def set_rate(self, rate: float) -> None:
        v = self.state.Leaf()
        v.t0 = 0
        v.attempts = 0
        v.rate = int(rate)
        self.state[self.state.Key(0)] = v

    def counters(self) -> tuple[int, int]:
        """(events submitted, reserve failures) so far."""
        from flowscope.sensor import maps

        c = maps.counters_dict(self.counters_fd)
        return c["events"], c["ring_full"]

    def fill(self, events: int) -> None:
        """Submit about ``events`` records from this CPU (nothing consuming)."""
        self.set_rate(0)
        self.loader.prog_test_run(self.prog_fd, self.frame, max(1, events // NPER))

    def start(self, rate: float, seconds: float) -> None:
        """Fork the producer, pinned to PRODUCER_CPU; it runs until stop() (or its bound)."""
        self.set_rate(rate)
        # Bound without stop(): a run costs >= ~30 ns (the clock read alone), so this
        # lasts >= ``seconds``, and at most ~10 x that at the slowest (4 events per run).
        repeat = int(min(2 ** 32 - 1, seconds * 4e7))
        pid = os.fork()
        if pid == 0:  # child: one syscall, no Python-level cleanup
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                os.sched_setaffinity(0, {PRODUCER_CPU})
                self.loader.prog_test_run(self.prog_fd, self.frame, repeat)
            finally:
                os._exit(0)
        self.child = pid

    def stop(self) -> None:
        """SIGKILL interrupts the test run at once (the kernel checks for signals)."""
        if self.child:
            pid, self.child = self.child, 0
            _kill(pid)

    def close(self) -> None:
        self.stop()
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


class FlowscopeConsumer:
    """(a) RingReader as the Sensor drives it (Sensor.poll -> wait, then drain())."""

    label = "(a) flowscope RingReader"

    def __init__(self, rb: RingBench):
        import numpy as np

        from flowscope.sensor import layout as SL
        from flowscope.sensor.ring import RingReader

        self.ring = RingReader(rb.events_fd)
        self.buf = np.zeros(max(16, rb.batch), dtype=SL.EVENT_DTYPE)
        self.ring.drain(self.buf[:1])  # compile/load the drain kernel

    def step(self) -> int:
        self.ring.wait(0.1)
        total = 0
        for _ in range(64):
            n = self.ring.drain(self.buf)
            total += n
            if n < len(self.buf):
                break
        return total

    def flush(self) -> int:
        total = 0
        for _ in range(4096):
            n = self.ring.drain(self.buf)
            total += n
            if n == 0:
                break
        return total

    def close(self) -> None:
        self.ring.close()


class BccConsumer:
    """(b) BCC's Python callback consumer, bounded to one batch per poll."""

    label = "(b) BCC Python callback"

    def __init__(self, rb: RingBench):
        self.rb = rb
        self.batch = rb.batch
        self.seen = 0
        self.limit = 0

        def cb(ctx, data, size):
            self.seen += 1
            return -1 if self.seen >= self.limit else 0  # < 0 ends libbpf's loop

        self._cb = cb
        rb.bpf[b"fs_events"].open_ring_buffer(cb)

    def step(self) -> int:
        before = self.seen
        self.limit = self.seen + self.batch
        self.rb.bpf.ring_buffer_poll(100)
        return self.seen - before

    def flush(self) -> int:
        before = self.seen
        for _ in range(4096):
            k = self.seen
            self.limit = self.seen + self.batch
            self.rb.bpf.ring_buffer_consume()
            if self.seen == k:
                break
        return self.seen - before

    def close(self) -> None:
        pass  # the ring buffer manager goes with RingBench.close()


def full_ring_rate(rb: RingBench, cons, rounds: int) -> float:
    """Events/s draining a ring filled beforehand, one CPU, no producer running."""
    cons.flush()
    fill = int(rb.ring_size / (8 + 136) * 0.9)
    best = 0.0
    for _ in range(rounds):
        rb.fill(fill)
        t = time.perf_counter()
        n = cons.flush()
        dt = time.perf_counter() - t
        if n:
            best = max(best, n / dt)
    return best


def sustained(rb: RingBench, cons, rate: float, seconds: float, warm: float) -> dict:
    """One producer run against ``cons``; rates over the window after ``warm`` seconds."""
    cons.flush()
    e0, f0 = rb.counters()
    got = 0
    win = None
    rb.start(rate, seconds + 2)
    try:
        t_start = time.monotonic()
        t_warm, t_end = t_start + warm, t_start + seconds
        while True:
            now = time.monotonic()
            if win is None and now >= t_warm:
                win = (now, got, *rb.counters())
            if now >= t_end:
                break
            got += cons.step()
        t1 = time.monotonic()
        g1 = got
        e1w, f1w = rb.counters()
    finally:
        rb.stop()
    t_stop = time.monotonic()
    e1, f1 = rb.counters()
    got += cons.flush()
    tw, gw, ew, fw = win
    return {
        "offered": (e1w - ew + f1w - fw) / (t1 - tw),
        "consumed": (g1 - gw) / (t1 - tw),
        "dropped": f1 - f0,
        "attempts": (e1 - e0) + (f1 - f0),
        "submitted": e1 - e0,
        "received": got,
        "seconds": t_stop - t_start,
    }


def part1(args) -> dict:
    old_aff = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CONSUMER_CPU})
    rb = RingBench()
    res = {"ring_size": rb.ring_size, "batch": rb.batch, "rows": []}
    try:
        for kind in (FlowscopeConsumer, BccConsumer):
            cons = kind(rb)
            try:
                row = {"label": kind.label,
                       "full": full_ring_rate(rb, cons, 3 if args.quick else 5)}
                for mode, rate in (("sat", 0), ("paced", args.rate)):
                    log(f"  ring: {kind.label}, {'saturating' if not rate else 'paced'} ...")
                    row[mode] = sustained(rb, cons, rate, args.ring_seconds, args.warm)
                res["rows"].append(row)
            finally:
                cons.close()
    finally:
        rb.close()
        os.sched_setaffinity(0, old_aff)
    return res


# ============================================================================================
# Part 2: live veth throughput
# ============================================================================================


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def reader_main(argv) -> int:
    """--sink read: drains the UDP socket ``fd`` (inherited) with recvmmsg, busy (no wake-ups
    on the sender's CPU), until SIGTERM or ``seconds``; prints the datagrams it took."""
    fd, cpu, seconds = int(argv[0]), int(argv[1]), float(argv[2])
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    os.sched_setaffinity(0, {cpu})
    vlen = 1024
    buf = ctypes.create_string_buffer(64 * vlen)
    iovs, msgs = (IoVec * vlen)(), (MMsgHdr * vlen)()
    for i in range(vlen):
        iovs[i].base, iovs[i].len = ctypes.addressof(buf) + 64 * i, 64
        msgs[i].hdr.iov, msgs[i].hdr.iovlen = ctypes.addressof(iovs[i]), 1
    rec = _libc.recvmmsg
    rec.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    got, end, ptr = 0, time.monotonic() + seconds, ctypes.addressof(msgs)
    print("ready", flush=True)
    while not stop and time.monotonic() < end:  # bounded in time and by SIGTERM
        for _ in range(256):
            n = rec(fd, ptr, vlen, socket.MSG_DONTWAIT, None)
            if n > 0:
                got += n
    print(got, flush=True)
    return 0


def _frames(p: dict) -> list[bytes]:
    """The sender's frames: ``FRAME_LEN``-byte UDP frames, one per flow."""
    src_mac = bytes.fromhex(p["src_mac"].replace(":", ""))
    dst_mac = bytes.fromhex(p["dst_mac"].replace(":", ""))
    s_ip, d_ip = socket.inet_aton(p["src_ip"]), socket.inet_aton(p["dst_ip"])
    frames = []
    for i in range(p["flows"]):
        payload = bytes(FRAME_LEN - 14 - 20 - 8)
        udp = struct.pack("!HHHH", 40000 + i, p["port"], 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         s_ip, d_ip)
        csum = sum(struct.unpack("!10H", ip))
        while csum >> 16:
            csum = (csum & 0xFFFF) + (csum >> 16)
        ip = ip[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip[12:]
        frames.append(dst_mac + src_mac + b"\x08\x00" + ip + udp)
    return frames


#: --sender xdp: redirects every frame it is run on out of the veth end in the netns
XDP_SENDER = "int fs_bench_xmit(struct xdp_md *ctx) { return bpf_redirect(IFINDEX, 0); }"
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
#: frames per test run, one flow's turn (~0.5 s): a run has a fixed cost (~25 ms here, from the
#: rates reached with 64 Ki and 1 Mi frames per run), so the flows take long turns
XDP_CHUNK = 1 << 20


def _xdp_sender(p: dict, frames: list[bytes]):
    """``send(n)`` for --sender xdp: BPF_PROG_TEST_RUN of an XDP program in live-frames mode
    (the kernel's XDP traffic generator), each run sending up to XDP_CHUNK copies of one
    frame, the flows in turn; returns the frames sent."""
    from flowscope.sensor import loader

    bcc = loader.import_bcc()
    ifindex = socket.if_nametoindex(p["ifname"])
    b = bcc.BPF(text=XDP_SENDER.replace("IFINDEX", str(ifindex)).encode())
    fd = b.load_func(b"fs_bench_xmit", bcc.BPF.XDP).fd
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    turn = 0

    def send(n: int) -> int:
        nonlocal turn
        buf = bufs[turn % len(bufs)]
        turn += 1
        a = loader._TestRunAttr()
        a.prog_fd = fd
        a.data_in = ctypes.addressof(buf)
        a.data_size_in = len(buf)
        a.repeat = min(n, XDP_CHUNK)
        a.flags = BPF_F_TEST_XDP_LIVE_FRAMES
        a.batch_size = 64
        try:
            loader.bpf_syscall(loader.BPF_PROG_TEST_RUN, a)
        except OSError:
            return -1
        return a.repeat

    send.keep = b  # the program stays loaded while send is alive
    return send


def _socket_sender(p: dict, frames: list[bytes]):
    """``send(n)`` for --sender socket: sendmmsg on an AF_PACKET socket (qdisc bypassed)."""
    vlen = 1024
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    iovs = (IoVec * vlen)()
    msgs = (MMsgHdr * vlen)()
    for i in range(vlen):
        b = bufs[i % len(bufs)]
        iovs[i].base = ctypes.addressof(b)
        iovs[i].len = len(frames[0])
        msgs[i].hdr.iov = ctypes.addressof(iovs[i])
        msgs[i].hdr.iovlen = 1
    sendmmsg = _libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.bind((p["ifname"], 0))
    fd, ptr = s.fileno(), ctypes.addressof(msgs)

    def send(n: int) -> int:
        return sendmmsg(fd, ptr, min(vlen, n), 0)

    send.keep = (s, bufs, iovs, msgs)
    return send


def sender_main(argv) -> int:
    """Runs inside the netns: sends 60-byte UDP frames (--sender: socket or xdp)."""
    p = json.loads(argv[0])
    os.sched_setaffinity(0, {p["cpu"]})
    frames = _frames(p)
    send = (_xdp_sender if p["kind"] == "xdp" else _socket_sender)(p, frames)
    max_pkts = int(p["max_packets"])
    total = 0
    errors = 0

    def send_for(seconds: float) -> int:
        nonlocal total, errors
        sent = 0
        end = time.monotonic() + seconds
        while total < max_pkts and time.monotonic() < end:  # bounded: time and count
            n = send(max_pkts - total)
            if n < 0:
                errors += 1
                continue
            sent += n
            total += n
        return sent

    send_for(p["warm"])
    print("go", flush=True)
    t = time.monotonic()
    sent = send_for(p["seconds"])
    dt = time.monotonic() - t
    print(f"done {sent} {dt:.6f} {total} {errors}", flush=True)
    return 0


SINKS = {"full": "a UDP socket that never reads (every frame dropped at its full queue)",
         "read": "a UDP socket drained by a busy recvmmsg loop on CPU 0",
         "mirror": "frames for another MAC, freed in ip_rcv (OTHERHOST), as on a mirror port"}
SENDERS = {"socket": "sendmmsg on AF_PACKET",
           "xdp": "XDP live-frames test runs redirecting into the veth (GRO on at our end)"}
#: --sink mirror: the frames' destination, a MAC no interface here has
MIRROR_DST_MAC = "02:00:5e:10:00:01"


class Veth:
    """netns + veth pair; our end stays in this namespace. Removed by close()."""

    def __init__(self, sink: str = "full", sender: str = "socket"):
        tag = f"fsbl{os.getpid() % 100000}"
        self.ns, self.a, self.b = tag, f"{tag}a", f"{tag}b"
        n = os.getpid() % 200 + 20
        self.ip_a, self.ip_b = f"10.213.{n}.1", f"10.213.{n}.2"
        self.sink = None
        self.sink_kind = sink
        self.sender = sender
        self.reader = None
        self.created = False

    def open(self) -> None:
        for t in ("ip", "ethtool"):
            if _sh("which", t, check=False).returncode:
                raise SystemExit(f"bench_live: {t} not found")
        _sh("ip", "netns", "del", self.ns, check=False)
        _sh("ip", "link", "del", self.a, check=False)
        self.created = True
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1")
        _sh("ip", "link", "add", self.a, "type", "veth", "peer", "name", self.b, "netns", self.ns)
        _sh("sysctl", "-qw", f"net.ipv6.conf.{self.a}.disable_ipv6=1")
        _sh("ip", "addr", "add", f"{self.ip_a}/24", "dev", self.a)
        _sh("ip", "link", "set", self.a, "up")
        _sh("ip", "-n", self.ns, "addr", "add", f"{self.ip_b}/24", "dev", self.b)
        _sh("ip", "-n", self.ns, "link", "set", self.b, "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        _sh("ethtool", "-K", self.a, "gso", "off", "tso", "off", "gro", "off")
        _sh("ip", "netns", "exec", self.ns, "ethtool", "-K", self.b, "gso", "off", "tso", "off",
            "gro", "off")
        if self.sender == "xdp":
            # frames redirected into a veth reach its peer only through the peer's NAPI,
            # which GRO turns on (UDP datagrams to a socket without UDP_GRO are not merged)
            _sh("ethtool", "-K", self.a, "gro", "on")
        # the receiver (--sink): a bound UDP socket that never reads (full stack path, no
        # ICMP back), the same socket drained by a reader process, or none (mirror)
        if self.sink_kind != "mirror":
            self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if self.sink_kind == "read":
                self.sink.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
            else:
                self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sink.bind((self.ip_a, UDP_PORT))
        self.mac_a = Path(f"/sys/class/net/{self.a}/address").read_text().strip()
        self.dst_mac = MIRROR_DST_MAC if self.sink_kind == "mirror" else self.mac_a
        self.mac_b = json.loads(_sh("ip", "-n", self.ns, "-j", "link", "show", "dev",
                                    self.b).stdout)[0]["address"]
        self.ifindex = socket.if_nametoindex(self.a)

    def start_reader(self, seconds: float) -> None:
        """--sink read: drain the socket from a process pinned to CONSUMER_CPU."""
        if self.sink_kind != "read":
            return
        fd = self.sink.fileno()
        self.reader = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--reader", str(fd),
             str(CONSUMER_CPU), str(seconds)],
            pass_fds=(fd,), stdout=subprocess.PIPE, text=True)
        if self.reader.stdout.readline().strip() != "ready":
            raise RuntimeError("sink reader did not start")

    def stop_reader(self) -> int:
        """Stop the reader; the datagrams it took (-1 without one)."""
        if self.reader is None:
            return -1
        r, self.reader = self.reader, None
        try:
            time.sleep(0.1)  # what is still queued
            r.send_signal(signal.SIGTERM)
            return int(r.communicate(timeout=120)[0].strip() or -1)
        finally:
            if r.poll() is None:
                _kill(r.pid)

    def rx(self) -> int:
        return int(Path(f"/sys/class/net/{self.a}/statistics/rx_packets").read_text())

    def rx_dropped(self) -> int:
        return int(Path(f"/sys/class/net/{self.a}/statistics/rx_dropped").read_text())

    def close(self) -> None:
        self.stop_reader()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.created:
            self.created = False
            _sh("ip", "link", "del", self.a, check=False)
            _sh("ip", "netns", "del", self.ns, check=False)


def _readline(proc, buf: bytearray, limit: float) -> str:
    """One line of the sender's stdout (raw fd, own buffer), waiting at most ``limit`` s."""
    end = time.monotonic() + limit
    while b"\n" not in buf:
        left = end - time.monotonic()
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        if not r:
            raise RuntimeError(f"sender: no output within {limit:.0f} s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"sender exited ({proc.wait(5)}): {proc.stderr.read()}")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode().strip()


def send_traffic(v: Veth, args, seconds: float, during=None) -> dict:
    """Run the sender once; packets received by our end in its timed window.

    ``during(end)``, when given, runs while the sender is in its window (``end`` is the
    monotonic time the window closes) and must return before then.
    """
    p = {"cpu": PRODUCER_CPU, "ifname": v.b, "src_mac": v.mac_b, "dst_mac": v.dst_mac,
         "src_ip": v.ip_b, "dst_ip": v.ip_a, "port": UDP_PORT, "flows": args.flows,
         "warm": 0.3, "seconds": seconds, "max_packets": (seconds + 0.3) * 20e6,
         "kind": v.sender}
    rx_start, drop_start = v.rx(), v.rx_dropped()
    udp_start = _udp_rcvbuf_errors()
    v.start_reader(seconds + 40)
    proc = subprocess.Popen(["ip", "netns", "exec", v.ns, sys.executable,
                             str(Path(__file__).resolve()), "--sender", json.dumps(p)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    buf = bytearray()
    try:
        line = _readline(proc, buf, 30)
        if line != "go":
            raise RuntimeError(f"sender: {line!r}")
        r0, t0 = v.rx(), time.monotonic()
        if during is not None:
            during(t0 + seconds)
        line = _readline(proc, buf, seconds + 30)
        r1, t1 = v.rx(), time.monotonic()
        _, w_sent, w_dt, total, errors = line.split()
        if proc.wait(20) != 0:
            raise RuntimeError(f"sender failed: {proc.stderr.read()}")
    finally:
        if proc.poll() is None:
            _kill(proc.pid)
        read = v.stop_reader()
    return {"rx_pps": (r1 - r0) / (t1 - t0), "tx_pps": int(w_sent) / float(w_dt),
            "sent": int(total), "send_errors": int(errors), "rx": v.rx() - rx_start,
            "rx_dropped": v.rx_dropped() - drop_start, "sink_read": read,
            "sink_drops": _udp_rcvbuf_errors() - udp_start}


def _udp_rcvbuf_errors() -> int:
    """UDP datagrams this namespace dropped for a full socket queue (/proc/net/snmp)."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


class Hooks:
    """Programs on the veth's hooks that can be attached and detached quickly: an ingress
    program on XDP (generic, or native) or on tcx, and a tcx egress program."""

    def __init__(self, v: Veth, in_fd: int, tc_fd: int, native: bool = False,
                 tcx_in: bool = False):
        self.v, self.in_fd, self.tc_fd, self.native = v, in_fd, tc_fd, native
        self.tcx_in = tcx_in
        self.links: list[int] = []

    def attach(self) -> None:
        from flowscope.sensor import attach

        if self.tcx_in:
            self.links.append(attach.link_create(self.in_fd, self.v.ifindex,
                                                 attach.BPF_TCX_INGRESS))
        else:
            flags = attach.XDP_FLAGS_DRV_MODE if self.native else attach.XDP_FLAGS_SKB_MODE
            self.links.append(attach.link_create(self.in_fd, self.v.ifindex, attach.BPF_XDP,
                                                 flags))
        self.links.append(attach.link_create(self.tc_fd, self.v.ifindex,
                                             attach.BPF_TCX_EGRESS))

    def detach(self) -> None:
        while self.links:
            os.close(self.links.pop())


#: alternating slices: (name, label), in the order they come between "none" slices
SLICES = (("empty", "empty XDP generic + tcx programs"),
          ("empty_tcx", "empty programs on both tcx hooks"),
          ("flowscope", "flowscope's XDP generic + TC programs"),
          ("tcx", "flowscope's TC programs on both tcx hooks"),
          ("native", "flowscope's XDP native + TC programs"))


def alternating(v: Veth, args) -> dict:
    """One long sender run; slices with nothing / empty programs / flowscope's programs.

    Order none, empty, none, empty_tcx, none, flowscope, ... (``SLICES``): every attached
    slice sits between two
    unattached ones, and its ratio is taken against their mean (host noise drifts over
    seconds, so adjacent slices share most of it). flowscope's programs are the ones the
    Sensor attaches (same build, default sizes); no userspace reads them here.
    """
    from flowscope.config import SensorConfig, TrackerConfig
    from flowscope.sensor import loader
    from flowscope.sensor.settings import tunables

    bcc = loader.import_bcc()
    eb = bcc.BPF(text=EMPTY_PROGS.encode())
    fs = None
    hooks = {}
    try:
        empty_tc = eb.load_func(b"empty_tc", bcc.BPF.SCHED_CLS).fd
        hooks["empty"] = Hooks(v, eb.load_func(b"empty_xdp", bcc.BPF.XDP).fd, empty_tc)
        hooks["empty_tcx"] = Hooks(v, empty_tc, empty_tc, tcx_in=True)
        fs = loader.load(tunables(SensorConfig(), TrackerConfig()))
        hooks["flowscope"] = Hooks(v, fs.xdp_fd, fs.tc_fd)
        hooks["tcx"] = Hooks(v, fs.bpf.load_func(b"fs_tc_ingress", bcc.BPF.SCHED_CLS).fd,
                             fs.tc_fd, tcx_in=True)
        hooks["native"] = Hooks(v, fs.xdp_fd, fs.tc_fd, native=True)
        order = [x for name, _ in SLICES for x in ("none", name)]
        slices: list[tuple[str, float]] = []

        def during(end: float) -> None:
            i = 0
            while time.monotonic() + args.slice + 0.2 < end:
                name = order[i % len(order)]
                i += 1
                h = hooks.get(name)
                try:
                    if h is not None:
                        h.attach()
                    time.sleep(0.05)  # settle
                    r0, t0 = v.rx(), time.monotonic()
                    time.sleep(args.slice)
                    r1, t1 = v.rx(), time.monotonic()
                finally:
                    if h is not None:
                        h.detach()
                slices.append((name, (r1 - r0) / (t1 - t0)))

        run = send_traffic(v, args, args.alt_seconds, during)
    finally:
        for h in hooks.values():
            h.detach()
        if fs is not None:
            fs.close()
        eb.cleanup()
    out = {"slices": slices, "run": run}
    for name, _ in SLICES:
        ratios, rates = [], []
        for j, (n, r) in enumerate(slices):
            if n != name:
                continue
            nb = [slices[k][1] for k in (j - 1, j + 1)
                  if 0 <= k < len(slices) and slices[k][0] == "none"]
            if nb:
                ratios.append(r / statistics.mean(nb))
                rates.append(r)
        out[name] = {"ratios": ratios, "rates": rates}
    out["none"] = {"rates": [r for n, r in slices if n == "none"]}
    return out


_KERNEL_LINE = re.compile(r"flowscope: kernel: packets (\d+) .*ring_full (\d+) unparseable (\d+)")


def _cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_flowscope(v: Veth, args, tmp: Path, rnd: int, mode: str = "auto") -> dict:
    """``flowscope live`` on our veth end (pinned to CONSUMER_CPU) while the sender runs."""
    out, err = tmp / f"live{rnd}{mode}.jsonl", tmp / f"live{rnd}{mode}.err"
    if mode == "tc":  # ingress on tcx instead of XDP
        cfg = tmp / "tc.yaml"
        cfg.write_text("sensor:\n  ingress: tc\n")
        how = ["--config", str(cfg)]
    elif mode == "nodrops":  # generic XDP without the drop tracer (sensor.drops: false)
        cfg = tmp / "nodrops.yaml"
        cfg.write_text("sensor:\n  drops: false\n  xdp_mode: generic\n")
        how = ["--config", str(cfg)]
    elif mode == "native-nodrops":  # native XDP without the drop tracer
        cfg = tmp / "native-nodrops.yaml"
        cfg.write_text("sensor:\n  drops: false\n  xdp_mode: native\n")
        how = ["--config", str(cfg)]
    elif mode == "tcx-nodrops":  # the default config without the drop tracer
        cfg = tmp / "tcx-nodrops.yaml"
        cfg.write_text("sensor:\n  drops: false\n")
        how = ["--config", str(cfg)]
    elif mode == "auto":  # the default config (ingress auto: tcx on veth)
        how = []
    else:
        how = ["--xdp-mode", mode]
    with open(err, "w") as errf:  # inherits part2's pinning to CONSUMER_CPU
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowscope", "live", "-i", v.a, "--format", "jsonl", "-o",
             str(out), *how, "--duration", str(args.veth_seconds + 120)],
            stdout=subprocess.DEVNULL, stderr=errf, cwd=REPO)
    try:
        end = time.monotonic() + 90
        while "Tracking flows on" not in err.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"flowscope live did not start: {err.read_text()}")
            time.sleep(0.05)
        rx_attached = v.rx()
        cpu0 = _cpu_seconds(proc.pid)
        r = send_traffic(v, args, args.veth_seconds)
        time.sleep(0.2)
        r["sensor_cpu_s"] = _cpu_seconds(proc.pid) - cpu0
        r["rx_while_attached"] = v.rx() - rx_attached
        r["xdp_line"] = next((ln for ln in err.read_text(errors="replace").splitlines()
                              if "Tracking flows on" in ln), "")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
        if rc != 0:
            raise RuntimeError(f"flowscope live exited {rc}: {err.read_text()}")
    finally:
        if proc.poll() is None:
            _kill(proc.pid)
    ended = flows = 0
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        if (rec.get("event") == "ended" and rec.get("proto") == "udp"
                and rec.get("src_ip") == v.ip_b and rec.get("dst_port") == UDP_PORT):
            ended += rec["init_pkts"] + rec["resp_pkts"]
            flows += 1
    m = _KERNEL_LINE.findall(err.read_text())
    r.update(ended_pkts=ended, ended_flows=flows,
             kernel_packets=int(m[-1][0]) if m else -1,
             ring_full=int(m[-1][1]) if m else -1,
             unparseable=int(m[-1][2]) if m else -1)
    return r


#: runs with programs attached and no sensor process (--xdp-modes): on both tcx hooks, or
#: ingress on native XDP (-native)
HOOK_MODES = {"empty": "empty programs on both tcx hooks",
              "floor": "floor program (parse + per-CPU count) on tcx",
              "programs": "flowscope's TC programs on tcx, no process",
              "empty-native": "empty XDP native + tcx egress programs",
              "floor-native": "floor program on XDP native + tcx egress",
              "programs-native": "flowscope's XDP native + TC, no process"}


def hook_programs(v: Veth, modes) -> tuple[dict, list]:
    """The ``HOOK_MODES`` asked for, loaded once: {mode: Hooks} and what to close after."""
    from bench_kernel import build_floor

    from flowscope.config import SensorConfig, TrackerConfig
    from flowscope.sensor import loader
    from flowscope.sensor.settings import tunables

    hooks, owned = {}, []
    if not set(modes) & set(HOOK_MODES):
        return hooks, owned
    bcc = loader.import_bcc()
    want = {m.removesuffix("-native") for m in modes if m in HOOK_MODES}
    fds = {}  # kind: (ingress XDP program, ingress tc program, egress tc program)
    if "empty" in want:
        eb = bcc.BPF(text=EMPTY_PROGS.encode())
        owned.append(eb.cleanup)
        fd = eb.load_func(b"empty_tc", bcc.BPF.SCHED_CLS).fd
        fds["empty"] = (eb.load_func(b"empty_xdp", bcc.BPF.XDP).fd, fd, fd)
    if "floor" in want:
        fb = build_floor(bcc, tunables(SensorConfig(), TrackerConfig())["max_flows"])
        owned.append(fb.cleanup)
        fd = fb.load_func(b"floor_tc", bcc.BPF.SCHED_CLS).fd
        fds["floor"] = (fb.load_func(b"floor_xdp", bcc.BPF.XDP).fd, fd, fd)
    if "programs" in want:
        fs = loader.load(tunables(SensorConfig(), TrackerConfig()))
        owned.append(fs.close)
        fds["programs"] = (fs.xdp_fd, fs.bpf.load_func(b"fs_tc_ingress", bcc.BPF.SCHED_CLS).fd,
                           fs.tc_fd)
    for mode in set(modes) & set(HOOK_MODES):
        xdp, tc_in, tc_out = fds[mode.removesuffix("-native")]
        hooks[mode] = (Hooks(v, xdp, tc_out, native=True) if mode.endswith("-native")
                       else Hooks(v, tc_in, tc_out, tcx_in=True))
    return hooks, owned


def run_hooks(v: Veth, args, h: Hooks) -> dict:
    """One sender run with ``h`` attached and no process reading its maps."""
    h.attach()
    try:
        return send_traffic(v, args, args.veth_seconds)
    finally:
        h.detach()


def part2(args) -> dict:
    v = Veth(args.sink, args.sender)
    res = {"runs": {"none": [], **{m: [] for m in args.xdp_modes}}}
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-live-"))
    old_aff = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CONSUMER_CPU})
    hooks, owned = {}, []
    try:
        v.open()
        res["veth"] = (v.a, v.ns, v.b)
        hooks, owned = hook_programs(v, args.xdp_modes)
        for rnd in range(args.rounds):
            log(f"  veth: round {rnd + 1}/{args.rounds}, none ...")
            res["runs"]["none"].append(send_traffic(v, args, args.veth_seconds))
            for mode in args.xdp_modes:
                if mode in hooks:
                    log(f"  veth: round {rnd + 1}/{args.rounds}, {HOOK_MODES[mode]} ...")
                    res["runs"][mode].append(run_hooks(v, args, hooks[mode]))
                    continue
                log(f"  veth: round {rnd + 1}/{args.rounds}, flowscope live ({mode}) ...")
                res["runs"][mode].append(run_flowscope(v, args, tmp, rnd, mode))
        if args.alt_seconds > 0:
            log(f"  veth: alternating {args.slice:g} s slices for {args.alt_seconds:g} s ...")
            res["alt"] = alternating(v, args)
    finally:
        for h in hooks.values():
            h.detach()
        for close in owned:
            close()
        os.sched_setaffinity(0, old_aff)
        v.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return res


# ============================================================================================
# Report
# ============================================================================================


def _m(x: float) -> str:
    return f"{x / 1e6:.2f}"


def report(args, r1: dict | None, r2: dict | None) -> int:
    missed = 0
    if r1:
        rows = {row["label"][:3]: row for row in r1["rows"]}
        b = rows["(b)"]
        print()
        print(f"Ring buffer drain: {r1['ring_size'] >> 20} MiB ring, 136-byte fs_event records, "
              f"batch {r1['batch']}; producer (BPF_PROG_TEST_RUN) on CPU {PRODUCER_CPU}, "
              f"consumer on CPU {CONSUMER_CPU}; {args.ring_seconds:g} s per run, rates over "
              f"the last {args.ring_seconds - args.warm:g} s. M = million events.")
        hdr = (f"{'consumer':<28}{'producer':<14}{'offered M/s':>12}{'consumed M/s':>13}"
               f"{'dropped':>12}{'drop %':>8}{'vs (b)':>8}")
        print(hdr)
        print("-" * len(hdr))
        for key in ("(a)", "(b)"):
            row = rows[key]
            for mode, name in (("sat", "saturating"), ("paced", f"{args.rate / 1e6:g} M/s")):
                s = row[mode]
                pct = 100.0 * s["dropped"] / max(1, s["attempts"])
                print(f"{row['label']:<28}{name:<14}{_m(s['offered']):>12}{_m(s['consumed']):>13}"
                      f"{s['dropped']:>12}{pct:>7.1f}%{s['consumed'] / b[mode]['consumed']:>7.2f}x")
        print(f"{'one CPU, full ring, no producer':<42}{'':>12}"
              + "".join(f"  {k} {_m(rows[k]['full'])}" for k in ("(a)", "(b)"))
              + " M/s")
        for row in r1["rows"]:
            for mode in ("sat", "paced"):
                s = row[mode]
                if s["received"] != s["submitted"]:
                    print(f"  WARNING {row['label']} {mode}: consumed {s['received']} of "
                          f"{s['submitted']} submitted events")
        a = rows["(a)"]
        ok1 = (a["sat"]["consumed"] >= 10e6 and a["paced"]["dropped"] == 0
               and a["paced"]["offered"] >= 0.98 * args.rate)
        ratio = a["sat"]["consumed"] / b["sat"]["consumed"]
        print(f"target (a) >= 10 M/s sustained, no drops: saturating {_m(a['sat']['consumed'])} "
              f"M/s ({a['sat']['consumed'] / 10e6:.2f}x of 10 M/s), at {args.rate / 1e6:g} M/s "
              f"offered dropped {a['paced']['dropped']} -> {'met' if ok1 else 'NOT met'}")
        print(f"target (a) >= 4x (b): {ratio:.2f}x -> {'met' if ratio >= 4 else 'NOT met'}")
        missed += (not ok1) + (ratio < 4)
    if r2:
        runs = r2["runs"]
        none = [r["rx_pps"] for r in runs["none"]]
        base = statistics.median(none)
        print()
        print(f"Live veth: {FRAME_LEN}-byte UDP frames, {args.flows} flows, {SENDERS[args.sender]} "
              f"in netns {r2['veth'][1]} (CPU {PRODUCER_CPU}; veth receive runs there too) -> "
              f"{r2['veth'][0]}; flowscope on CPU {CONSUMER_CPU}. Mpps = million packets/s "
              f"received (rx_packets of {r2['veth'][0]}). Sink: {SINKS[args.sink]}.")
        print(f"Separate runs: {args.rounds} rounds x {args.veth_seconds:g} s, none and flowscope "
              f"({', '.join(args.xdp_modes)}) alternating; median (min..max) over rounds; "
              f"ratios per round against that round's none run.")
        hdr = (f"{'configuration':<46}{'rx Mpps':>9}{'min':>7}{'max':>7}{'vs none':>9}"
               f"{'min':>7}{'max':>7}")
        print(hdr)
        print("-" * len(hdr))
        print(f"{'none (baseline)':<46}{_m(base):>9}{_m(min(none)):>7}{_m(max(none)):>7}"
              f"{1.0:>8.2f}x")
        fs_ratio = 0.0
        for mode in args.xdp_modes:
            live = [r["rx_pps"] for r in runs[mode]]
            pair = [f / n for f, n in zip(live, none)]
            ratio = statistics.median(live) / base
            if mode in HOOK_MODES:
                print(f"{HOOK_MODES[mode]:<46}{_m(statistics.median(live)):>9}"
                      f"{_m(min(live)):>7}{_m(max(live)):>7}{ratio:>8.2f}x{min(pair):>6.2f}x"
                      f"{max(pair):>6.2f}x   +{(1 / ratio - 1) * 1e9 / base:.0f} ns/packet")
                continue
            fs_ratio = max(fs_ratio, ratio)
            name = {"tc": "ingress: tc", "nodrops": "XDP generic, drops: false",
                    "tcx-nodrops": "default, drops: false",
                    "native-nodrops": "XDP native, drops: false",
                    "auto": "default config"}.get(mode, "XDP " + mode)
            print(f"{'flowscope live, ' + name:<46}{_m(statistics.median(live)):>9}"
                  f"{_m(min(live)):>7}{_m(max(live)):>7}{ratio:>8.2f}x{min(pair):>6.2f}x"
                  f"{max(pair):>6.2f}x   +{(1 / ratio - 1) * 1e9 / base:.0f} ns/packet")
            ns = [1e9 * r["sensor_cpu_s"] / max(1, r["rx_while_attached"]) for r in runs[mode]]
            util = [r["sensor_cpu_s"] / (r["rx_while_attached"] / max(1.0, r["rx_pps"]))
                    for r in runs[mode]]
            print(f"  sensor process CPU per packet at {_m(statistics.median(live))} Mpps: "
                  f"{statistics.median(ns):.0f} ns (min {min(ns):.0f}, max {max(ns):.0f}); "
                  f"{100 * statistics.median(util):.0f}% of one CPU")
            lines = {r["xdp_line"] for r in runs[mode]}
            for ln in sorted(lines):
                print(f"  {ln.strip()}")
        alt = r2.get("alt")
        if alt:
            print(f"Alternating slices in one sender run ({args.slice:g} s each, a none slice "
                  f"before each of the others; ratio of each slice to the mean of the two none "
                  f"slices around it; median (min..max)):")
            an = alt["none"]["rates"]
            print(f"{'none':<40}{_m(statistics.median(an)):>9}{_m(min(an)):>7}{_m(max(an)):>7}"
                  f"{1.0:>8.2f}x   {len(an)} slices")
            for name, label in SLICES:
                d = alt[name]
                if not d["ratios"]:
                    continue
                print(f"{label:<40}{_m(statistics.median(d['rates'])):>9}{_m(min(d['rates'])):>7}"
                      f"{_m(max(d['rates'])):>7}{statistics.median(d['ratios']):>8.2f}x"
                      f"{min(d['ratios']):>6.2f}x{max(d['ratios']):>6.2f}x   "
                      f"{len(d['ratios'])} slices")
            if alt["flowscope"]["ratios"] and alt["empty"]["ratios"]:
                fr = statistics.median(alt["flowscope"]["ratios"])
                er = statistics.median(alt["empty"]["ratios"])
                nb = statistics.median(an)
                print(f"  per packet at the none rate ({1e9 / nb:.0f} ns): empty XDP generic + "
                      f"tcx hooks +{(1 / er - 1) * 1e9 / nb:.0f} ns, flowscope's XDP generic + "
                      f"TC programs +{(1 / fr - 1) * 1e9 / nb:.0f} ns")
                for name, what in (("empty_tcx", "empty tcx hooks"),
                                   ("tcx", "flowscope's programs on tcx"),
                                   ("native", "flowscope's programs, native XDP")):
                    if alt[name]["ratios"]:
                        r = statistics.median(alt[name]["ratios"])
                        print(f"  {what}: +{(1 / r - 1) * 1e9 / nb:.0f} ns")
        if set(args.xdp_modes) - set(HOOK_MODES):  # a sensor ran
            print(f"target flowscope live >= 0.9x of none (best mode): {fs_ratio:.2f}x -> "
                  f"{'met' if fs_ratio >= 0.9 else 'NOT met'}")
            missed += fs_ratio < 0.9
        all_ok = True
        for i, (mode, r) in enumerate((m, r) for m in args.xdp_modes for r in runs[m]
                                      if m not in HOOK_MODES):
            ok = (r["ended_pkts"] == r["rx_while_attached"] == r["sent"]
                  == r["kernel_packets"] and r["rx_dropped"] == 0)
            all_ok &= ok
            print(f"accounting {mode} run {i + 1}: sent {r['sent']}, received (rx_packets while "
                  f"attached) {r['rx_while_attached']}, rx_dropped {r['rx_dropped']}, kernel "
                  f"packets {r['kernel_packets']}, ended flows {r['ended_flows']} with "
                  f"{r['ended_pkts']} packets, ring_full {r['ring_full']}, unparseable "
                  f"{r['unparseable']} -> {'all equal' if ok else 'DIFFERENT'}")
        for cfg, rs in runs.items():
            for r in rs:
                if r["sent"] != r["rx"] or r["rx_dropped"] or r["send_errors"]:
                    print(f"  note {cfg}: sent {r['sent']}, rx {r['rx']}, rx_dropped "
                          f"{r['rx_dropped']}, send errors {r['send_errors']}")
                if args.sink == "read" and r["sink_drops"]:
                    print(f"  note {cfg}: the reader fell behind: {r['sink_drops']} datagrams "
                          f"dropped at the socket (read {r['sink_read']})")
        missed += not all_ok
    return 1 if missed else 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--sender":
        return sender_main(sys.argv[2:])
    if len(sys.argv) > 4 and sys.argv[1] == "--reader":
        return reader_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 30 s instead of about 2 min")
    ap.add_argument("--rate", type=float, default=10e6, help="paced producer rate, events/s")
    ap.add_argument("--ring-seconds", type=float, default=None, help="per ring run (default 5)")
    ap.add_argument("--veth-seconds", type=float, default=None, help="per veth run (default 3)")
    ap.add_argument("--rounds", type=int, default=None, help="veth rounds (default 5)")
    ap.add_argument("--alt-seconds", type=float, default=None,
                    help="alternating-slices sender run (default 30; 0: none)")
    ap.add_argument("--slice", type=float, default=0.25, help="alternating slice length, s")
    ap.add_argument("--flows", type=int, default=16, help="UDP flows in the veth traffic")
    ap.add_argument("--only", choices=("ring", "veth"), help="run one part only")
    ap.add_argument("--xdp-modes", default="auto,generic",
                    help="comma-separated sensor modes to run (default auto,generic): auto = "
                         "the default config (tcx ingress on veth); generic, native = "
                         "--xdp-mode; tc = sensor.ingress: tc; nodrops = generic with "
                         "sensor.drops: false (no drop tracer); tcx-nodrops = the default "
                         "config with sensor.drops: false; native-nodrops = native XDP "
                         "with sensor.drops: false; empty, floor, programs = no sensor "
                         "process, only programs on both tcx hooks (empty ones, the floor "
                         "program of bench_kernel.py, flowscope's TC programs); "
                         "empty-native, floor-native, programs-native = the same with the "
                         "ingress program on native XDP")
    ap.add_argument("--sink", choices=tuple(SINKS), default="full",
                    help="what receives the frames (default full; see the module docstring)")
    ap.add_argument("--sender", choices=tuple(SENDERS), default="socket",
                    help="what sends the frames (default socket; see the module docstring)")
    args = ap.parse_args()
    args.xdp_modes = [m for m in args.xdp_modes.split(",") if m]
    q = args.quick
    args.ring_seconds = args.ring_seconds or (1.5 if q else 5.0)
    args.warm = min(0.5, args.ring_seconds / 3)
    args.veth_seconds = args.veth_seconds or (2.0 if q else 3.0)
    args.rounds = args.rounds or (1 if q else 5)
    if args.alt_seconds is None:
        args.alt_seconds = 6.0 if q else 30.0
    if (not 0 < args.ring_seconds <= 60 or not 0 < args.veth_seconds <= 60
            or not 0 <= args.alt_seconds <= 120 or not 0.05 <= args.slice <= 5
            or not 1 <= args.rounds <= 20):
        ap.error("keep --ring-seconds/--veth-seconds in (0, 60], --alt-seconds in (0, 120], "
                 "--slice in [0.05, 5] and --rounds in [1, 20]; --alt-seconds 0 skips the "
                 "alternating slices")
    known = ("auto", "generic", "native", "tc", "nodrops", "tcx-nodrops", "native-nodrops",
             *HOOK_MODES)
    bad = set(args.xdp_modes) - set(known)
    if bad:
        ap.error(f"--xdp-modes: unknown {', '.join(sorted(bad))} ({', '.join(known)})")
    if os.geteuid() != 0:
        ap.error("needs root (BPF, network namespaces)")
    if not {PRODUCER_CPU, CONSUMER_CPU} <= os.sched_getaffinity(0):
        ap.error(f"needs CPUs {CONSUMER_CPU} and {PRODUCER_CPU}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_term)
    t0 = time.monotonic()
    r1 = r2 = None
    try:
        if args.only in (None, "ring"):
            log("part 1: ring buffer drain")
            r1 = part1(args)
        if args.only in (None, "veth"):
            log("part 2: live veth throughput")
            r2 = part2(args)
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"bench_live: interrupted ({str(e) or 'Ctrl-C'}), cleaned up")
        return 130
    rc = report(args, r1, r2)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())

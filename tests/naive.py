"""Plain-Python twins of the numba kernels, written straight from semantics.md.

They share no code with ``flowscope._kernels``: the tests run both on the same
input and require identical results. Events are tuples so that they compare
field by field:

    ("started", key_words, side, ts)
    ("packet", key_words, side, len, ts)
    ("established", key_words, ts)
    ("state_change", key_words, from, to, ts)
    ("ended", key_words, reason, ts, state, pkts(2), bytes(2), history)
"""

from __future__ import annotations

from collections import OrderedDict

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
(ACTIVE, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT, CLOSING, CLOSED, RESET) = range(8)
R_FIN, R_RST, R_IDLE, R_EVICTED, R_SHUTDOWN = range(5)
FIVE, FIVE_DIR, IP_PAIR, MAC_PAIR = range(4)


def naive_key(p: dict, kind: int):
    """(key tuple, reversed) or None; ``p`` holds PKT_DTYPE field values."""
    if kind == MAC_PAIR:
        if not p["pflags"] & 0x08:
            return None
        s, d = p["smac"], p["dmac"]
        meta = MAC_PAIR << 56
        return ((0, s, 0, d, meta), False) if s <= d else ((0, d, 0, s, meta), True)
    if p["l3"] not in (4, 6):
        return None
    src = (p["src_hi"], p["src_lo"])
    dst = (p["dst_hi"], p["dst_lo"])
    if kind == IP_PAIR:
        meta = IP_PAIR << 56 | p["l3"] << 48
        return ((*src, *dst, meta), False) if src <= dst else ((*dst, *src, meta), True)
    sp, dp = (p["sport"], p["dport"]) if p["pflags"] & 0x01 else (0, 0)
    base = p["l3"] << 48 | p["proto"] << 32
    if kind == FIVE_DIR:
        return (*src, *dst, FIVE_DIR << 56 | base | sp << 16 | dp), False
    if (*src, sp) <= (*dst, dp):
        return (*src, *dst, base | sp << 16 | dp), False
    return (*dst, *src, base | dp << 16 | sp), True


def naive_transition(state: int, side: int, flags: int, fin_side: int):
    """The transition table of semantics.md, first matching rule wins."""
    rules = [
        (lambda: flags & RST, RESET),
        (lambda: state == ACTIVE and side == 0 and flags & SYN, SYN_SENT),
        (lambda: state == SYN_SENT and side == 1 and flags & SYN and flags & ACK, SYN_RECEIVED),
        (lambda: state == SYN_RECEIVED and side == 0 and flags & ACK, ESTABLISHED),
        (lambda: state == ESTABLISHED and flags & FIN, FIN_WAIT),
        (lambda: state == FIN_WAIT and flags & FIN and side != fin_side, CLOSING),
        (lambda: state == CLOSING and flags & ACK, CLOSED),
    ]
    for cond, new in rules:
        if cond():
            if new == FIN_WAIT:
                fin_side = side
            return new, fin_side
    return state, fin_side


def naive_history(hist: str, side: int, flags: int, payload_len: int) -> str:
    letters = ""
    if flags & SYN:
        letters += "S"
    if flags & FIN:
        letters += "F"
    if flags & RST:
        letters += "R"
    if payload_len > 0:
        letters += "D"
    if side == 1:
        letters = letters.lower()
    return (hist + letters)[:16]


class _Flow:
    def __init__(self, init_rev, ts, proto, timeout):
        self.init_rev = init_rev
        self.state = ACTIVE
        self.fin_side = -1
        self.pkts = [0, 0]
        self.bytes = [0, 0]
        self.started = ts
        self.last = ts
        self.hist = ""
        self.proto = proto
        self.timeout = timeout


M64 = (1 << 64) - 1


def _frag_slot(words, slots):
    """Slot of a fragment-table key (five 64-bit words): the engine's hash, restated."""
    h = 0x9E3779B97F4A7C15
    for j, w in enumerate(words):
        if j:
            h ^= h >> 31
        h = ((h ^ w) * 0xBF58476D1CE4E5B9) & M64
    return (h ^ (h >> 29)) & (slots - 1)


class NaiveFragments:
    """The fragment table (layout.FRAG_SLOTS direct-mapped entries), dicts only.

    ``lookup`` returns ("keyed", ports), ("held", None) or ("first", held counts) and
    the number of held fragments it gave up (orphaned).
    """

    def __init__(self, slots=4096, timeout=30 * 10**9):
        self.slots = slots
        self.timeout = timeout
        self.table: dict = {}  # slot -> dict(key, ts, ports | held)

    def lookup(self, p: dict, first: bool):
        words = (p["src_hi"], p["src_lo"], p["dst_hi"], p["dst_lo"],
                 p["l3"] << 40 | p["proto"] << 32 | p.get("frag_id", 0))
        slot = _frag_slot(words, self.slots)
        ent = self.table.get(slot)
        live = ent is not None and ent["key"] == words and p["ts"] - ent["ts"] < self.timeout
        held_here = ent is not None and ent.get("held") is not None
        orphaned = ent["held"][0] if held_here and not live else 0
        this = (1, p["caplen"], p["payload_len"], p["ip_len"])
        if not first:
            if live and not held_here:
                return ("keyed", ent["ports"]), 0
            if live:
                ent["held"] = tuple(a + b for a, b in zip(ent["held"], this))
                return ("held", None), 0
            self.table[slot] = {"key": words, "ts": p["ts"], "held": this}
            return ("held", None), orphaned
        ports = (p["sport"], p["dport"]) if p["pflags"] & 0x01 else (0, 0)
        given = ent["held"] if live and held_here else (0, 0, 0, 0)
        ts = ent["ts"] if live else p["ts"]
        self.table[slot] = {"key": words, "ts": ts, "ports": ports, "held": None}
        return ("first", given), orphaned

    def flush(self) -> int:
        n = 0
        for slot, ent in list(self.table.items()):
            if ent.get("held") is not None:
                n += ent["held"][0]
                del self.table[slot]
        return n


class NaiveTracker:
    """The reference tracker, one packet at a time, dicts and lists only."""

    def __init__(self, kind=FIVE, max_flows=100_000, infer=False, timeouts=None,
                 sweep_interval=0, frag_timeout=30 * 10**9, flt=None, sample_rate=1):
        self.kind = kind
        self.flt = flt  # {"include": {"cidrs": [...], "ports": [...], ...}, "exclude": {...}}
        self.sample_rate = sample_rate
        self.filtered = self.sampled_out = 0
        self.max_flows = max_flows
        self.infer = infer
        self.timeouts = timeouts or {"tcp": 300 * 10**9, "udp": 60 * 10**9,
                                     "icmp": 30 * 10**9, "other": 30 * 10**9}
        self.flows: OrderedDict = OrderedDict()  # first = least recently touched
        self.sweep_interval = sweep_interval
        self.next_sweep = 0
        self.last_ts = 0
        self.created = self.ended = self.evicted = self.unmatched = 0
        self.matched_pkts = self.matched_bytes = 0
        self.frags = NaiveFragments(timeout=frag_timeout)
        self.frag_keyed = self.frag_held = self.frag_orphans = self.truncated_l4 = 0

    def _timeout(self, proto):
        return self.timeouts[{6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}.get(proto, "other")]

    def _end(self, key, reason, ts, out):
        f = self.flows.pop(key)
        self.ended += 1
        if reason == R_EVICTED:
            self.evicted += 1
        out.append(("ended", key, reason, ts, f.state, tuple(f.pkts), tuple(f.bytes), f.hist))

    def track(self, p: dict) -> list:
        out: list = []
        ts = p["ts"]
        if self.sweep_interval:
            if self.next_sweep == 0:
                self.next_sweep = ts + self.sweep_interval
            elif ts >= self.next_sweep:
                self.next_sweep = ts + self.sweep_interval
                out += self.sweep(ts)
        held = None
        live_row = p["pflags"] & 0xC0
        is_frag = p["pflags"] & 0x04  # non-first fragment
        is_first = p["pflags"] & 0x10 and not is_frag
        if (self.kind in (FIVE, FIVE_DIR) and (is_frag or is_first) and not live_row
                and p["l3"] in (4, 6) and p["proto"] in (6, 17, 132)):
            (what, val), orphaned = self.frags.lookup(p, bool(is_first))
            self.frag_held -= orphaned
            self.frag_orphans += orphaned
            self.unmatched += orphaned
            if what == "held":
                self.frag_held += 1
                return out
            if what == "keyed":
                self.frag_keyed += 1
                p = dict(p, sport=val[0], dport=val[1], pflags=p["pflags"] | 0x01)
            elif val[0]:
                held = val
        got = naive_key(p, self.kind)
        if got is None:
            self.unmatched += 1
            return out
        self.last_ts = max(self.last_ts, ts)
        if p.get("error", 0) == 5:  # a TCP/UDP header cut short, keyed at the IP level
            self.truncated_l4 += 1
        key, rev = got
        # live sensor rows: 0x40 = absolute counters, 0x80 = sync row (not a packet)
        sync = bool(p["pflags"] & 0x80)
        absolute = sync or bool(p["pflags"] & 0x40)
        tcp = bool(p["pflags"] & 0x02) and not sync and self.kind in (FIVE, FIVE_DIR)
        flags = p["tcp_flags"]
        f = self.flows.get(key)
        if f is None and not live_row:
            drop = None
            if self.flt and not naive_passes(self.flt, p):
                drop = "filtered"
            elif self.sample_rate > 1 and naive_sample_hash(key) % self.sample_rate:
                drop = "sampled_out"
            if drop:
                n = 1 + (held[0] if held else 0)
                setattr(self, drop, getattr(self, drop) + n)
                if held:
                    self.frag_held -= held[0]
                    self.frag_keyed += held[0]
                return out
        if f is None:
            if len(self.flows) >= self.max_flows:
                self._end(next(iter(self.flows)), R_EVICTED, ts, out)
            init_rev = rev
            if self.infer and tcp and flags & SYN and flags & ACK:
                init_rev = not rev
            proto = p["proto"] if p["l3"] in (4, 6) else 0
            started = p["first_ts"] if absolute else ts  # live rows: the kernel's first packet
            f = _Flow(init_rev, started, proto, self._timeout(proto))
            self.flows[key] = f
            self.created += 1
            out.append(("started", key, 0 if rev == init_rev else 1, started))
        elif not sync:
            self.flows.move_to_end(key)
        side = 0 if rev == f.init_rev else 1
        if absolute:
            # counters by key orientation; the initiator's orientation is init_rev
            o = int(bool(f.init_rev))
            pk = (p["cnt_pkts0"], p["cnt_pkts1"])
            by = (p["cnt_bytes0"], p["cnt_bytes1"])
            self.matched_pkts += pk[o] + pk[1 - o] - sum(f.pkts)
            self.matched_bytes += by[o] + by[1 - o] - sum(f.bytes)
            f.pkts = [pk[o], pk[1 - o]]
            f.bytes = [by[o], by[1 - o]]
        else:
            f.pkts[side] += 1
            f.bytes[side] += p["caplen"]
            self.matched_pkts += 1
            self.matched_bytes += p["caplen"]
            if held:  # fragments of this datagram seen before this first fragment
                f.pkts[side] += held[0]
                f.bytes[side] += held[1]
                self.matched_pkts += held[0]
                self.matched_bytes += held[1]
                self.frag_held -= held[0]
                self.frag_keyed += held[0]
        f.last = ts
        if not sync:
            self._packet(p, key, f, side, tcp, flags, ts, out)
        # live rows: the kernel's TCP mirror decides a flow's end when the engine missed it
        kstate = p.get("kstate", 0)
        if absolute and kstate in (CLOSED, RESET) and f.state not in (CLOSED, RESET):
            f.state = kstate
        if f.state == CLOSED:
            self._end(key, R_FIN, ts, out)
        elif f.state == RESET:
            self._end(key, R_RST, ts, out)
        return out

    def _packet(self, p, key, f, side, tcp, flags, ts, out) -> None:
        if tcp:
            f.hist = naive_history(f.hist, side, flags, p["payload_len"])
            new, f.fin_side = naive_transition(f.state, side, flags, f.fin_side)
            if new != f.state:
                if new == ESTABLISHED:
                    out.append(("established", key, ts))
                else:
                    out.append(("state_change", key, f.state, new, ts))
                f.state = new
        out.append(("packet", key, side, p["caplen"], ts))

    def sweep(self, now: int) -> list:
        out: list = []
        for key in list(self.flows):
            f = self.flows[key]
            if now - f.last >= f.timeout:
                self._end(key, R_IDLE, now, out)
        return out

    def finish(self) -> list:
        n = self.frags.flush()
        self.frag_held -= n
        self.frag_orphans += n
        self.unmatched += n
        out: list = []
        for key in list(self.flows):
            self._end(key, R_SHUTDOWN, self.last_ts, out)
        return out


def records_to_tuples(recs) -> list:
    """Engine EVENT_DTYPE records as the tuples NaiveTracker produces."""
    out = []
    names = {1: "started", 2: "packet", 3: "established", 4: "state_change", 5: "ended"}
    for r in recs:
        kind = names[int(r["kind"])]
        key = tuple(int(w) for w in r["key"])
        ts = int(r["ts"])
        if kind == "started":
            out.append((kind, key, int(r["side"]), ts))
        elif kind == "packet":
            out.append((kind, key, int(r["side"]), int(r["length"]), ts))
        elif kind == "established":
            out.append((kind, key, ts))
        elif kind == "state_change":
            out.append((kind, key, int(r["from_state"]), int(r["to_state"]), ts))
        else:
            hist = bytes(r["history"][: int(r["hist_len"])]).decode()
            out.append((kind, key, int(r["reason"]), ts, int(r["to_state"]),
                        (int(r["pkts"][0]), int(r["pkts"][1])),
                        (int(r["bytes"][0]), int(r["bytes"][1])), hist))
    return out


def naive_sample_hash(words) -> int:
    """The flow sampler's hash of five key words, restated (layout.SAMPLE_SEED, HASH_M1/M2)."""
    h = 0x5851F42D4C957F2D
    for w in words:
        h = ((h ^ w) * 0xBF58476D1CE4E5B9) & M64
        h ^= h >> 31
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 33)


def naive_passes(flt: dict, p: dict) -> bool:
    """Does the flow of packet ``p`` pass the filter ``flt`` ({"include": {"cidrs": [...],
    "ports": [...], "protocols": [...]}, "exclude": {...}}, protocols as numbers)?"""
    import ipaddress

    ip = p["l3"] in (4, 6)
    addrs = []
    if ip:
        for w in ("src", "dst"):
            v = p[f"{w}_hi"] << 64 | p[f"{w}_lo"]
            addrs.append(ipaddress.ip_address(v if p["l3"] == 6 else v & 0xFFFFFFFF)
                         if p["l3"] == 4 else ipaddress.IPv6Address(v))
    ports = (p["sport"], p["dport"]) if p["pflags"] & 0x01 else (0, 0)
    facts = {"cidrs": lambda nets: any(a in ipaddress.ip_network(n) for a in addrs
                                       for n in nets),
             "ports": lambda lst: any(x in lst for x in ports),
             "protocols": lambda lst: p["proto"] in lst}
    for what, test in facts.items():
        inc = flt.get("include", {}).get(what)
        exc = flt.get("exclude", {}).get(what)
        if inc and not (ip and test(inc)):
            return False
        if exc and ip and test(exc):
            return False
    return True

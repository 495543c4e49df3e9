#!/usr/bin/env python3
"""Mutation fuzzer for ``flowscope pcap``: damaged captures must give exit 0/1, valid output.

Seeds are the captures under tests/data (and tests/data/fuzz, and /work/shared/pcaps
when present), cut to their first records. Each case applies a few mutations that
know the container (pcap record headers, file header link type, pcapng block
lengths and types, Interface Description Block options if_tsresol / if_tsoffset /
link type, packet timestamps including the INT64 extremes, captured and wire
lengths), the frame (VLAN / QinQ / MPLS / PPPoE headers inserted, IPv4 / IPv6 /
TCP / UDP header fields set to edge values) or just bytes (truncation, splicing
two files, flips), then checks:

* no crash, no traceback, no hang;
* the outcome (clean / CaptureError, i.e. exit status 0 / 1) equals what an
  independent container walker in this file expects: 1 exactly when the file is
  damaged at the container level (or a pcapng packet / interface block longer than
  ``MAX_BLOCK`` had to be skipped);
* every JSON Lines / EVE / Zeek JSON line parses and has the format's keys; Zeek
  TSV has its header and as many fields on each line as ``#fields`` names; the
  table writer does not fail;
* conservation: the packets counted by Ended records are at most the packet
  records in the file (counted here, not by flowscope), and no flow ends twice.

Most cases run in-process in a worker child (CaptureReader + FlowTracker + each
writer) so the rate is useful; a child that dies or hangs is a failure and is
restarted. One case in ``--cli-every`` also runs ``python -m flowscope pcap`` as
a subprocess with every ``--format``, checking its exit status and stderr.

Examples::

    python scripts/fuzz.py --seed 1 --seconds 60
    python scripts/fuzz.py --seed 7 --cases 2000 --out /tmp/fuzz-failures
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from flowscope.pcap import MAX_BLOCK, MAX_CAPLEN, SUPPORTED_LINKTYPES

ROOT = Path(__file__).resolve().parents[1]
SEED_DIRS = [ROOT / "tests" / "data", ROOT / "tests" / "data" / "fuzz",
             ROOT / "tests" / "data" / "tunnels", Path("/work/shared/pcaps")]
FORMATS = ("jsonl", "eve", "zeek", "zeek-json", "table")

# --- container model (independent of flowscope.pcap) ----------------------------------------

# The walker below is a second, plain implementation of the container rules; the limits
# and the link types it applies (MAX_BLOCK, MAX_CAPLEN, SUPPORTED_LINKTYPES) are the
# reader's own, imported above (one home for each fact).
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
NG_MAGIC = b"\x0a\x0d\x0d\x0a"
BOM = 0x1A2B3C4D


def model(data: bytes) -> tuple[int, int]:
    """(expected exit status, packet records in the file) by the container rules."""
    if not data:
        return 1, 0
    if data[:4] in PCAP_MAGICS:
        o = PCAP_MAGICS[data[:4]]
        if len(data) < 24:
            return 1, 0
        if struct.unpack_from(o + "I", data, 20)[0] & 0xFFFF not in SUPPORTED_LINKTYPES:
            return 1, 0
        pos, frames = 24, 0
        while pos < len(data):
            if len(data) - pos < 16:
                return 1, frames
            incl = struct.unpack_from(o + "I", data, pos + 8)[0]
            if incl > MAX_CAPLEN or len(data) - pos - 16 < incl:
                return 1, frames
            frames += 1
            pos += 16 + incl
        return 0, frames
    if data[:4] != NG_MAGIC:
        return 1, 0
    pos, frames, o, skipped = 0, 0, None, 0
    n = len(data)
    while pos < n:
        if n - pos < 12:
            return 1, frames
        if data[pos:pos + 4] == NG_MAGIC:
            bom = data[pos + 8:pos + 12]
            if bom == b"\x1a\x2b\x3c\x4d":
                o = ">"
            elif bom == b"\x4d\x3c\x2b\x1a":
                o = "<"
            else:
                return 1, frames
        if o is None:
            return 1, frames
        btype, blen = struct.unpack_from(o + "II", data, pos)
        if blen < 12 or blen % 4:
            return 1, frames
        if n - pos < blen:
            return 1, frames
        if struct.unpack_from(o + "I", data, pos + blen - 4)[0] != blen:
            return 1, frames
        if blen > MAX_BLOCK:
            if btype in (1, 2, 3, 6):
                skipped += 1
        elif btype == 0x0A0D0D0A and blen < 28:
            return 1, frames
        elif btype == 1 and blen < 20:
            return 1, frames
        elif btype == 3:
            if blen < 16:
                return 1, frames
            frames += 1
        elif btype in (2, 6):
            if blen < 32:
                return 1, frames
            if struct.unpack_from(o + "I", data, pos + 20)[0] > blen - 32:
                return 1, frames
            frames += 1
        pos += blen
    return (1 if skipped else 0), frames


# --- seeds and structure ---------------------------------------------------------------------

def split_units(data: bytes):
    """(kind, byte order, header bytes, [record or block bytes]) for a well-formed prefix."""
    if data[:4] in PCAP_MAGICS and len(data) >= 24:
        o = PCAP_MAGICS[data[:4]]
        units, pos = [], 24
        while pos + 16 <= len(data):
            incl = struct.unpack_from(o + "I", data, pos + 8)[0]
            if pos + 16 + incl > len(data):
                break
            units.append(data[pos:pos + 16 + incl])
            pos += 16 + incl
        return "pcap", o, data[:24], units
    if data[:4] == NG_MAGIC and len(data) >= 12:
        o = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        units, pos = [], 0
        while pos + 12 <= len(data):
            if data[pos:pos + 4] == NG_MAGIC:
                o = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack_from(o + "I", data, pos + 4)[0]
            if blen < 12 or pos + blen > len(data):
                break
            units.append(data[pos:pos + blen])
            pos += blen
        return "pcapng", o, b"", units
    return "raw", "<", b"", [data]


def load_seeds(dirs=SEED_DIRS, max_records: int = 48) -> list[tuple[str, bytes]]:
    seeds = []
    for d in map(Path, dirs):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.suffix not in (".pcap", ".pcapng", ".bin"):
                continue
            data = p.read_bytes()
            kind, o, head, units = split_units(data[: 4 << 20])
            if kind != "raw":
                data = head + b"".join(units[:max_records])
            seeds.append((p.name, data))
    return seeds


# --- mutations -------------------------------------------------------------------------------

I64 = [0, 1, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFE,
       0x8000000000000001, 1 << 32, (1 << 32) - 1, 1 << 62]
I32 = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x10000, 65535, 65536, 262144,
       MAX_CAPLEN, MAX_CAPLEN + 1]
I16 = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x00FF, 20, 40, 60, 64]
LINKS = sorted(SUPPORTED_LINKTYPES) + [2, 9, 105, 127, 147, 0xFFFF, 0x10001]


def _put(b: bytearray, off: int, fmt: str, v: int) -> None:
    if 0 <= off and off + struct.calcsize(fmt) <= len(b):
        struct.pack_into(fmt, b, off, v & ((1 << (8 * struct.calcsize(fmt))) - 1))


class Mutator:
    def __init__(self, rng: random.Random, seeds):
        self.r = rng
        self.seeds = seeds

    def pick(self, lst):
        return lst[self.r.randrange(len(lst))]

    # frame-level --------------------------------------------------------------------------
    def l2_insert(self, frame: bytes) -> bytes:
        """Insert a VLAN / QinQ / MPLS / PPPoE layer after the MAC addresses."""
        if len(frame) < 14:
            return frame
        r = self.r
        et = frame[12:14]
        choice = r.randrange(6)
        if choice == 0:
            extra = b"\x81\x00" + struct.pack(">H", r.randrange(65536))
        elif choice == 1:
            extra = (b"\x88\xa8" + struct.pack(">H", r.randrange(65536)) + b"\x81\x00"
                     + struct.pack(">H", r.randrange(65536)))
        elif choice == 2:  # MPLS: a stack of labels, bottom-of-stack maybe missing
            n = r.randrange(1, 12)
            labels = b"".join(struct.pack(">I", (r.randrange(1 << 20) << 12)
                                          | ((1 if (k == n - 1 and r.random() < 0.8) else 0) << 8)
                                          | r.randrange(256)) for k in range(n))
            return frame[:12] + b"\x88\x47" + labels + frame[14:]
        elif choice == 3:  # PPPoE session + PPP protocol
            ppp = self.pick([b"\x00\x21", b"\x00\x57", b"\xc0\x21", b"\x00\x00"])
            plen = self.pick([len(frame) - 12, 0, 0xFFFF, r.randrange(65536)])
            return (frame[:12] + b"\x88\x64\x11\x00" + struct.pack(">HH", r.randrange(65536), plen)
                    + ppp + frame[14:])
        elif choice == 4:  # many VLAN tags
            extra = b"".join(b"\x81\x00" + struct.pack(">H", r.randrange(65536))
                             for _ in range(r.randrange(2, 12)))
        else:  # a random ethertype
            return frame[:12] + self.pick([b"\x86\xdd", b"\x08\x00", b"\x88\x47", b"\x88\x64",
                                           b"\x81\x00", b"\x00\x00", b"\xff\xff"]) + frame[14:]
        return frame[:12] + extra + et + frame[14:]

    def dns_message(self, frame: bytes) -> bytes | None:
        """Damage the DNS message of an Ethernet/IPv4 frame to or from port 53 (UDP, or TCP
        after its length prefix): compression pointers (loops, forward, into the header,
        chains), label lengths, counts, or a crafted message; the IP and UDP lengths are
        kept consistent half of the time. None when the frame carries no DNS."""
        b = bytearray(frame)
        r = self.r
        off = 14
        if len(b) < off + 20 or b[12:14] != b"\x08\x00" or b[off] >> 4 != 4:
            return None
        ihl = (b[off] & 0xF) * 4
        l4 = off + ihl
        proto = b[off + 9]
        if proto == 17 and l4 + 8 <= len(b):
            m = l4 + 8
        elif proto == 6 and l4 + 20 <= len(b):
            m = l4 + (b[l4 + 12] >> 4) * 4 + 2
        else:
            return None
        if 53 not in struct.unpack_from(">HH", b, l4) or m + 12 > len(b):
            return None
        which = r.randrange(6)
        if which == 0:  # a pointer somewhere in the message
            k = r.randrange(m + 12, len(b)) if len(b) > m + 12 else m + 12
            if k + 2 <= len(b):
                b[k] = 0xC0 | r.randrange(4)
                b[k + 1] = self.pick([0, 12, 13, (k - m) & 0xFF, (k - m + 2) & 0xFF,
                                      r.randrange(256)])
        elif which == 1:  # a label length
            if len(b) > m + 12:
                b[r.randrange(m + 12, len(b))] = self.pick([0, 1, 63, 64, 0x80, 0xBF, 0xFF])
        elif which == 2:  # counts and flags
            _put(b, m + 2 * r.randrange(6), ">H", self.pick(I16 + [r.randrange(65536)]))
        else:  # a crafted message: pointer loops and chains, long names
            names = [b"\xc0\x0c", b"\xc0\x0e\xc0\x0c", b"\x01a\xc0\x0c",
                     (b"\x3f" + b"a" * 63) * 5 + b"\x00", b"\x01\x00\xc0\x06", b"\x00",
                     bytes(r.randrange(256) for _ in range(r.randrange(40)))]
            msg = (struct.pack(">HHHHHH", r.randrange(65536), self.pick([0, 0x8180, 0x8183]),
                               self.pick([0, 1, 2, 0xFFFF]), r.randrange(3), 0, 0)
                   + self.pick(names) + b"\x00\x01\x00\x01"[: r.randrange(5)])
            if proto == 6:
                msg = struct.pack(">H", self.pick([len(msg), 0, 12, 0xFFFF])) + msg
                m -= 2
            b = b[:m] + msg
            if r.random() < 0.5:
                _put(b, off + 2, ">H", min(len(b) - off, 0xFFFF))
                if proto == 17:
                    _put(b, l4 + 4, ">H", min(len(b) - l4, 0xFFFF))
        return bytes(b)

    def l3_fields(self, frame: bytes) -> bytes:
        """Set IPv4 / IPv6 / TCP / UDP header fields of an Ethernet frame to edge values
        (or, for a frame to or from port 53, damage its DNS message)."""
        r = self.r
        if r.random() < 0.4:
            dns = self.dns_message(frame)
            if dns is not None:
                return dns
        b = bytearray(frame)
        if len(b) < 14:
            return frame
        off = 14
        et = struct.unpack_from(">H", b, 12)[0]
        while et in (0x8100, 0x88A8) and off + 4 <= len(b):
            et = struct.unpack_from(">H", b, off + 2)[0]
            off += 4
        if et == 0x0800 and off + 20 <= len(b):
            ihl = (b[off] & 0xF) * 4
            which = r.randrange(7)
            if which == 0:
                b[off] = (b[off] & 0xF0) | r.randrange(16)
            elif which == 1:
                _put(b, off + 2, ">H", self.pick(I16 + [r.randrange(65536)]))
            elif which == 2:
                _put(b, off + 6, ">H", self.pick([0x2000, 0x1FFF, 0x3FFF, 0x4000, r.randrange(65536)]))
            elif which == 3:
                b[off + 9] = self.pick([0, 1, 4, 6, 17, 41, 47, 58, 132, 255])
            elif which == 4:
                b[off] = self.pick([0x60, 0x40, 0x00, 0xF5])
            tl = off + ihl
            if which >= 5 and tl + 20 <= len(b):
                if b[off + 9] == 6:
                    if which == 5:
                        b[tl + 12] = r.randrange(256)
                    else:
                        b[tl + 13] = r.randrange(256)
                elif b[off + 9] == 17:
                    _put(b, tl + 4, ">H", self.pick(I16))
        elif et == 0x86DD and off + 40 <= len(b):
            which = r.randrange(4)
            if which == 0:
                _put(b, off + 4, ">H", self.pick(I16 + [r.randrange(65536)]))
            elif which == 1:
                b[off + 6] = self.pick([0, 6, 17, 43, 44, 50, 51, 58, 59, 60, 135, 255])
            elif which == 2 and off + 48 <= len(b):  # an extension header chain
                b[off + 6] = self.pick([0, 43, 60, 44])
                b[off + 40] = self.pick([0, 6, 17, 44, 59, 60])
                b[off + 41] = r.randrange(256)
            else:
                b[off] = self.pick([0x40, 0x60, 0x00])
        else:
            for _ in range(r.randrange(1, 4)):
                k = r.randrange(len(b))
                b[k] = r.randrange(256)
        return bytes(b)

    # container-level ----------------------------------------------------------------------
    def mutate_pcap(self, o, head: bytes, units: list) -> bytes:
        r = self.r
        head = bytearray(head)
        units = list(units)
        for _ in range(r.randrange(1, 4)):
            m = r.randrange(10)
            if m == 0:
                _put(head, 20, o + "I", self.pick(LINKS))
            elif m == 1:
                head[:4] = self.pick(list(PCAP_MAGICS))
            elif not units:
                continue
            else:
                k = r.randrange(len(units))
                u = bytearray(units[k])
                if m == 2:  # timestamp words
                    _put(u, 0, o + "I", self.pick(I32))
                    _put(u, 4, o + "I", self.pick(I32 + [999_999, 1_000_000, 999_999_999]))
                elif m == 3:  # captured length
                    _put(u, 8, o + "I", self.pick(I32 + [len(u) - 16 + r.randrange(-4, 5)]))
                elif m == 4:  # wire length
                    _put(u, 12, o + "I", self.pick(I32 + [0, len(u) - 17]))
                elif m in (5, 6):
                    frame = self.l2_insert(bytes(u[16:])) if m == 5 else self.l3_fields(bytes(u[16:]))
                    u = bytearray(u[:16] + frame)
                    _put(u, 8, o + "I", len(frame))
                    _put(u, 12, o + "I", max(len(frame), struct.unpack_from(o + "I", u, 12)[0]))
                elif m == 7:  # drop or duplicate a record
                    if r.random() < 0.5:
                        del units[k]
                        continue
                    units.insert(k, bytes(u))
                elif m == 8:  # the same timestamp for many records (long / odd flows)
                    for j in range(k, len(units)):
                        uu = bytearray(units[j])
                        uu[0:8] = u[0:8]
                        units[j] = bytes(uu)
                    continue
                else:
                    if len(u) > 16:
                        u[16 + r.randrange(len(u) - 16)] = r.randrange(256)
                units[k] = bytes(u)
        return bytes(head) + b"".join(units)

    def mutate_pcapng(self, o, units: list) -> bytes:
        r = self.r
        units = list(units)
        for _ in range(r.randrange(1, 4)):
            if not units:
                break
            m = r.randrange(12)
            k = r.randrange(len(units))
            u = bytearray(units[k])
            btype = struct.unpack_from(o + "I", u, 0)[0] if len(u) >= 4 else -1
            if m == 0:  # block length, head or tail or both
                v = self.pick(I32 + [len(u) + 4, len(u) - 4, len(u) + 1, MAX_BLOCK + 4])
                where = r.randrange(3)
                if where in (0, 2):
                    _put(u, 4, o + "I", v)
                if where in (1, 2):
                    _put(u, len(u) - 4, o + "I", v)
            elif m == 1:  # block type
                _put(u, 0, o + "I", self.pick([1, 2, 3, 4, 5, 6, 0x0A0D0D0A, 0xBAD, 0x80000001]))
            elif m == 2 and btype == 1 and len(u) >= 16:  # an interface's options, same link type
                u = bytearray(self.idb(o, struct.unpack_from(o + "H", u, 8)[0]))
            elif m == 2 or (m == 3 and btype != 1):  # a new interface
                idb = self.idb(o)
                units.insert(k, idb)
                continue
            elif m == 3:  # an IDB's link type
                _put(u, 8, o + "H", self.pick(LINKS))
            elif m in (4, 5) and btype in (2, 6) and len(u) >= 32:  # packet timestamp
                v = self.pick(I64 + [r.getrandbits(64)])
                _put(u, 12, o + "I", v >> 32)
                _put(u, 16, o + "I", v)
                if m == 5:  # and the interface number
                    _put(u, 8, o + ("I" if btype == 6 else "H"), self.pick([0, 1, 2, 4095, 4096,
                                                                           0xFFFF, 0xFFFFFFFF]))
            elif m == 6 and btype in (2, 6) and len(u) >= 32:  # captured / wire length
                _put(u, 20 if r.random() < 0.7 else 24, o + "I",
                     self.pick(I32 + [len(u) - 32, len(u) - 31]))
            elif m == 7 and btype in (2, 6) and len(u) >= 32:  # frame contents
                incl = min(struct.unpack_from(o + "I", u, 20)[0], len(u) - 32)
                frame = bytes(u[28:28 + incl])
                frame = self.l2_insert(frame) if r.random() < 0.5 else self.l3_fields(frame)
                body = u[8:20] + struct.pack(o + "II", len(frame), len(frame)) + frame
                body += b"\0" * (-len(body) % 4)
                u = bytearray(struct.pack(o + "II", btype, len(body) + 12) + body
                              + struct.pack(o + "I", len(body) + 12))
            elif m == 8:  # drop / duplicate / move
                if r.random() < 0.4:
                    del units[k]
                else:
                    units.insert(r.randrange(len(units) + 1), bytes(u))
                continue
            elif m == 9:  # a new section (maybe of the other byte order)
                oo = self.pick(["<", ">"])
                shb = struct.pack(oo + "IHHq", BOM, 1, 0, -1)
                units.insert(k, struct.pack(oo + "II", 0x0A0D0D0A, 28) + shb + struct.pack(oo + "I", 28))
                continue
            elif m == 10 and r.random() < 0.15:  # an oversized block (streamed past)
                bt = self.pick([4, 5, 0xBAD, 6, 1, 3, 0x0A0D0D0A])
                size = MAX_BLOCK + 4 * r.randrange(1, 1024)
                blk = bytearray(struct.pack(o + "II", bt, size) + bytes(size - 12)
                                + struct.pack(o + "I", size))
                if bt == 0x0A0D0D0A:
                    _put(blk, 8, o + "I", BOM)
                units.insert(k, bytes(blk))
                continue
            else:
                if len(u) > 12:
                    u[8 + r.randrange(len(u) - 12)] = r.randrange(256)
            units[k] = bytes(u)
        return b"".join(units)

    def idb(self, o, link=None) -> bytes:
        r = self.r
        opts = b""
        if r.random() < 0.8:
            opts += struct.pack(o + "HH", 9, 1) + bytes([self.pick(
                [0, 3, 6, 9, 10, 12, 18, 19, 20, 28, 29, 63, 127, 0x80, 0x94, 0x9E, 0xBF, 0xC0, 0xFF,
                 r.randrange(256)])]) + b"\0\0\0"
        if r.random() < 0.6:
            opts += struct.pack(o + "HH", 14, 8) + struct.pack(o + "Q", self.pick(I64))
        opts += struct.pack(o + "HH", 0, 0)
        if link is None:
            link = self.pick(LINKS) & 0xFFFF
        body = struct.pack(o + "HHI", link, 0, self.pick([0, 64, 65535, 262144]))
        body += opts
        return struct.pack(o + "II", 1, len(body) + 12) + body + struct.pack(o + "I", len(body) + 12)

    def to_pcapng(self, o, head: bytes, units: list) -> list:
        """A pcap's records as pcapng blocks over 1-3 interfaces with random if_tsresol /
        if_tsoffset (so one flow's packets can get timestamps far apart)."""
        r = self.r
        link = struct.unpack_from(o + "I", head, 20)[0] & 0xFFFF
        nif = r.randrange(1, 4)
        shb = struct.pack(o + "IHHq", BOM, 1, 0, -1)
        blocks = [struct.pack(o + "II", 0x0A0D0D0A, 28) + shb + struct.pack(o + "I", 28)]
        blocks += [self.idb(o, link) for _ in range(nif)]
        for u in units:
            sec, sub, incl, wire = struct.unpack_from(o + "IIII", u, 0)
            raw = self.pick([sec * 1_000_000 + sub, r.getrandbits(64), self.pick(I64),
                             sec * 1_000_000 + sub])
            frame = u[16:]
            body = struct.pack(o + "IIIII", r.randrange(nif), raw >> 32, raw & 0xFFFFFFFF,
                               incl, wire) + frame
            body += b"\0" * (-len(body) % 4)
            blocks.append(struct.pack(o + "II", 6, len(body) + 12) + body
                          + struct.pack(o + "I", len(body) + 12))
        return blocks

    def case(self) -> tuple[bytes, str]:
        r = self.r
        name, data = self.pick(self.seeds)
        kind, o, head, units = split_units(data)
        how = [name]
        if kind == "pcap" and r.random() < 0.3:
            kind, units = "pcapng", self.to_pcapng(o, head, units)
            how.append("to-pcapng")
        if kind == "pcap":
            data = self.mutate_pcap(o, head, units)
            how.append("pcap")
        elif kind == "pcapng":
            data = self.mutate_pcapng(o, units)
            how.append("pcapng")
        tail = r.random()
        if tail < 0.12 and len(data) > 1:  # truncate
            data = data[: r.randrange(1, len(data))]
            how.append("cut")
        elif tail < 0.22:  # splice with another file
            name2, other = self.pick(self.seeds)
            if r.random() < 0.5:
                _, _, _, u2 = split_units(other)
                data = data + b"".join(u2[r.randrange(len(u2) + 1):]) if u2 else data
            else:
                data = data[: r.randrange(len(data) + 1)] + other[r.randrange(len(other) + 1):]
            how.append("splice:" + name2)
        elif tail < 0.30 and data:  # byte flips
            b = bytearray(data)
            for _ in range(r.randrange(1, 9)):
                b[r.randrange(len(b))] = r.randrange(256)
            data = bytes(b)
            how.append("flip")
        return data, "+".join(how)


# --- output checks ---------------------------------------------------------------------------

JSON_KEYS = {
    "jsonl": {"event", "ts", "flow_id"},
    "eve": {"timestamp", "flow_id", "event_type", "src_ip", "dest_ip", "proto", "flow"},
    "zeek-json": {"ts", "uid", "id.orig_h", "id.resp_h", "proto", "conn_state", "orig_pkts",
                  "resp_pkts"},
}


def check_output(fmt: str, text: str, frames: int) -> list[str]:
    """Problems with one writer's output (empty when it is valid and conserves packets).

    Inner flows of tunnels (``tunnel`` / ``tunnel_parents``) count the same frames again as
    their outer flows: the conservation check counts the other flows only.
    """
    problems = []
    pkts = 0
    ended = set()
    if fmt in JSON_KEYS:
        for i, line in enumerate(text.splitlines()):
            try:
                d = json.loads(line)
            except ValueError as exc:
                problems.append(f"{fmt}: line {i + 1} is not JSON ({exc}): {line[:200]}")
                continue
            missing = JSON_KEYS[fmt] - d.keys()
            if missing:
                problems.append(f"{fmt}: line {i + 1} lacks {sorted(missing)}")
            if "tunnel" in d or "tunnel_parents" in d:
                continue
            if fmt == "jsonl" and d.get("event") == "ended":
                pkts += d.get("init_pkts", 0) + d.get("resp_pkts", 0)
                q = d.get("dns_query")
                if q is not None and (not isinstance(q, str) or not 0 < len(q) <= 255
                                      or not all(33 <= ord(c) <= 126 for c in q)):
                    problems.append(f"jsonl: line {i + 1}: bad dns_query {q!r}")
                if d.get("flow_id") in ended:
                    problems.append(f"jsonl: flow {d.get('flow_id')} ended twice")
                ended.add(d.get("flow_id"))
            elif fmt == "eve":
                f = d.get("flow", {})
                pkts += f.get("pkts_toserver", 0) + f.get("pkts_toclient", 0)
            elif fmt == "zeek-json":
                pkts += d.get("orig_pkts", 0) + d.get("resp_pkts", 0)
    elif fmt == "zeek":
        lines = text.splitlines()
        fields = [ln for ln in lines if ln.startswith("#fields\t")]
        if not fields:
            problems.append("zeek: no #fields header")
        else:
            names = fields[0].split("\t")[1:]
            for i, ln in enumerate(lines):
                if ln.startswith("#"):
                    continue
                vals = ln.split("\t")
                if len(vals) != len(names):
                    problems.append(f"zeek: line {i + 1} has {len(vals)} fields, not {len(names)}")
                    continue
                row = dict(zip(names, vals))
                if row.get("tunnel_parents", "-") != "-":
                    continue
                for k in ("orig_pkts", "resp_pkts"):
                    if row.get(k, "-") != "-":
                        try:
                            pkts += int(row[k])
                        except ValueError:
                            problems.append(f"zeek: line {i + 1}: {k}={row[k]!r}")
        if lines and not lines[-1].startswith("#close"):
            problems.append("zeek: no #close line at the end")
    if pkts > frames:
        problems.append(f"{fmt}: ended records count {pkts} packets, the file has {frames}")
    return problems


# --- in-process worker -----------------------------------------------------------------------

def run_inprocess(path: str, frames: int, events_all: bool) -> dict:
    """Read ``path`` like ``flowscope pcap`` and format every Ended record with each writer."""
    from flowscope import layout
    from flowscope.config import TrackerConfig
    from flowscope.keys import FiveTuple
    from flowscope.output import FORMATS as WRITERS
    from flowscope.pcap import CaptureError, CaptureReader
    from flowscope.tracker import FlowTracker

    mask = layout.EVMASK_ALL if events_all else layout.EVMASK_ENDED
    tracker = FlowTracker(FiveTuple(), TrackerConfig(sweep_interval=1.0), events=mask, zeek=True)
    bufs = {f: io.StringIO() for f in FORMATS}
    writers = {f: WRITERS[f](bufs[f]) for f in FORMATS}
    status = 0
    message = ""

    def emit(recs):
        for f, w in writers.items():
            if f == "jsonl" or not events_all:
                w.write_records(recs)
            else:
                w.write_records(recs[recs["kind"] == layout.EV_ENDED])

    try:
        reader = CaptureReader(path, batch_size=8192, chunk_bytes=4 << 20)
        for batch in reader:
            for recs in tracker.process(batch):
                emit(recs)
    except CaptureError as exc:
        status = 1
        message = str(exc)
    for recs in tracker.process_finish():
        emit(recs)
    s = tracker.stats
    summary = {"files": 1,
               "packets": s.packets_matched + s.packets_unmatched - s.packets_decapsulated,
               "unmatched": s.packets_unmatched, "flows": s.flows_created, "fin": s.ended_fin,
               "rst": s.ended_rst, "idle": s.ended_idle, "evicted": s.flows_evicted,
               "shutdown": s.ended_shutdown}
    for f, w in writers.items():
        w.close(summary if f == "table" else None)
    problems = []
    for f in FORMATS:
        problems += check_output(f, bufs[f].getvalue(), frames)
    if summary["packets"] > frames:
        problems.append(f"tracker counted {summary['packets']} packets, the file has {frames}")
    return {"status": status, "message": message, "problems": problems}


def worker_main() -> int:
    """Serve cases: one JSON request per stdin line, one JSON answer per stdout line."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    for line in sys.stdin:
        req = json.loads(line)
        try:
            ans = run_inprocess(req["path"], req["frames"], req["events_all"])
        except Exception:  # noqa: BLE001 - every exception is a finding
            ans = {"status": None, "message": "", "problems": ["traceback: " + traceback.format_exc()]}
        out.write(json.dumps(ans) + "\n")
        out.flush()
    return 0


class Worker:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.proc = None
        self.errlog = tempfile.TemporaryFile()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errlog, text=True,
                                     cwd=ROOT, bufsize=1)

    def run(self, path: str, frames: int, events_all: bool) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"path": path, "frames": frames,
                                          "events_all": events_all}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return {"status": None, "message": "", "problems": [f"hang: no answer in {self.timeout} s"]}
        rc = self.proc.wait()
        self.proc = None
        self.errlog.seek(0)
        err = self.errlog.read().decode(errors="replace")[-600:]
        self.errlog.seek(0)
        self.errlog.truncate()
        return {"status": None, "message": "",
                "problems": [f"crash: worker died with status {rc}: {err.strip()}"]}

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def run_cli(path: str, frames: int, expect: int, timeout: float) -> list[str]:
    """``python -m flowscope pcap`` with every --format: status, stderr and output checks."""
    problems = []
    for fmt in FORMATS:
        try:
            p = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--no-progress",
                                "--format", fmt, path], capture_output=True, text=True,
                               timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            problems.append(f"cli {fmt}: hang (> {timeout} s)")
            continue
        if p.returncode < 0:
            problems.append(f"cli {fmt}: killed by signal {-p.returncode}")
        elif p.returncode != expect:
            problems.append(f"cli {fmt}: exit status {p.returncode}, expected {expect}: "
                            f"{p.stderr.strip()[-300:]}")
        if "Traceback" in p.stderr:
            problems.append(f"cli {fmt}: traceback: {p.stderr.strip()[-600:]}")
        problems += [f"cli {x}" for x in check_output(fmt, p.stdout, frames)]
    return problems


def signature(problems: list[str]) -> str:
    """A short key grouping failures of one kind (numbers and quoted text dropped)."""
    import re

    first = problems[0]
    if first.startswith("traceback:") or "traceback" in first:
        lines = [ln for ln in first.splitlines() if ln.strip()]
        first = lines[-1] if lines else first
    return re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "#", first)[:160]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=None, help="stop after N cases")
    ap.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    ap.add_argument("--out", metavar="DIR", help="save failing inputs here (name = hash)")
    ap.add_argument("--cli-every", type=int, default=50, metavar="K",
                    help="also run the CLI with every format on one case in K (0: never)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is a hang")
    ap.add_argument("--seed-dir", action="append", metavar="DIR",
                    help="take seed captures from DIR (repeatable; default: tests/data, "
                         "tests/data/fuzz and /work/shared/pcaps)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.cases is None and args.seconds is None:
        args.cases = 200
    rng = random.Random(args.seed)
    seeds = load_seeds(args.seed_dir or SEED_DIRS)
    mut = Mutator(rng, seeds)
    worker = Worker(args.timeout)
    outdir = Path(args.out) if args.out else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)
    failures: dict[str, list] = {}
    t0 = time.monotonic()
    n = cli_runs = 0
    with tempfile.TemporaryDirectory(prefix="flowscope-fuzz-") as tmp:
        path = os.path.join(tmp, "case.bin")
        worker.start()
        while True:
            if args.cases is not None and n >= args.cases:
                break
            if args.seconds is not None and time.monotonic() - t0 >= args.seconds:
                break
            data, how = mut.case()
            n += 1
            with open(path, "wb") as f:
                f.write(data)
            expect, frames = model(data)
            ans = worker.run(path, frames, rng.random() < 0.2)
            problems = list(ans["problems"])
            if ans["status"] is not None and ans["status"] != expect:
                problems.append(f"outcome {ans['status']}, expected {expect}: {ans['message']}")
            # The CLI also runs on the first failing case of each kind (the rest are alike).
            if args.cli_every and (n % args.cli_every == 0
                                   or (problems and signature(problems) not in failures)):
                cli_runs += 1
                problems += run_cli(path, frames, expect, args.timeout)
            if problems:
                sig = signature(problems)
                digest = hashlib.sha1(data).hexdigest()[:12]
                first = sig not in failures
                failures.setdefault(sig, []).append((digest, how, problems))
                if outdir:
                    (outdir / f"{digest}.bin").write_bytes(data)
                    (outdir / f"{digest}.txt").write_text(
                        f"{how}\nexpected exit {expect}, {frames} frames\n" + "\n".join(problems) + "\n")
                if first and not args.quiet:
                    print(f"case {n} ({how}, {len(data)} bytes, {digest}): " + problems[0][:400],
                          file=sys.stderr)
    worker.close()
    secs = time.monotonic() - t0
    rate = n / secs * 60 if secs else 0.0
    print(f"{n} cases in {secs:.1f} s ({rate:.0f} cases/min, {cli_runs} also through the CLI), "
          f"{sum(len(v) for v in failures.values())} failing, {len(failures)} kinds")
    for sig, items in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(items):5d}  {sig}   e.g. {items[0][0]} ({items[0][1]})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

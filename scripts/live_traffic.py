#!/usr/bin/env python3
"""A short, bounded mix of real traffic between two test hosts (demo and live tests).

    live_traffic.py serve ADDR4 ADDR6            # in the peer's netns: TCP/UDP responders
    live_traffic.py drive ADDR4 ADDR6 IFACE      # on the sensor's side: clients + raw frames

``drive`` runs: a TCP connection with data and a clean close, a refused
connection (RST), a half-open SYN (raw, from an address nobody answers for), a
UDP request/response, an ICMP echo (ping), the same TCP/UDP over IPv6, a
300 kB bulk transfer, a connection the client aborts with a RST while the
server's data is still in flight, VLAN-tagged frames written to IFACE with
an AF_PACKET socket (``serve`` also writes one back), a crafted lossy TCP
exchange (retransmissions, out-of-order segments, zero windows) between two
addresses nobody has, written the same way, DNS queries over UDP and TCP to a
tiny responder on port 53 (an A record for ``DNS_NAME``, NXDOMAIN for anything
else), and a UDP datagram to a closed port (the peer's kernel drops it and
answers ICMP port unreachable). Every wait has a timeout; the whole mix takes
~2 s.

Both ends run on one CPU (the highest they may use; ``one_cpu``). A veth hands each packet to
the receive path of the CPU that sent it, so a process that moved between CPUs mid-transfer
would leave one direction's packets being received on two CPUs at once, in an order no single
observation point defines: tcpdump's tap and the sensor's hooks could then see two segments
of the bulk transfer in different orders, and count its out-of-order segments differently.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import subprocess
import sys
import time

TCP_PORT, REFUSED_PORT, UDP_PORT, VLAN_PORT = 8080, 8081, 9090, 7777
FRAG_PORT = 7778  # fragmented UDP datagrams (raw frames)
BULK_PORT, ABORT_PORT = 8082, 8083
LOSSY_PORT = 8084  # a crafted lossy TCP exchange (raw frames)
BULK_BYTES = 300_000
DEADLINE_S = 15
DNS_PORT = 53
DNS_NAME = "flow.scope.test"
CLOSED_PORT = 9091  # nothing listens: the datagram is dropped (ICMP port unreachable)


def dns_query(tid: int, name: str, qtype: int = 1) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def dns_answer(query: bytes) -> bytes:
    """The response to a query: one A record (compressed name) for DNS_NAME, else NXDOMAIN."""
    if len(query) < 12:
        return b""
    tid = struct.unpack_from("!H", query)[0]
    end = 12
    labels = []
    while end < len(query) and query[end] and len(labels) < 64:
        labels.append(query[end + 1:end + 1 + query[end]].decode("ascii", "replace"))
        end += 1 + query[end]
    question = query[12:end + 5]
    if ".".join(labels) != DNS_NAME:
        return struct.pack("!HHHHHH", tid, 0x8183, 1, 0, 0, 0) + question
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes([192, 0, 2, 53])
    return struct.pack("!HHHHHH", tid, 0x8180, 1, 1, 0, 0) + question + rr


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac(ifname: str) -> bytes:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def _ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    if proto in (6, 17):  # L4 checksum over the pseudo header
        pseudo = s + d + struct.pack("!BBH", 0, proto, len(l4))
        off = 16 if proto == 6 else 6
        l4 = l4[:off] + struct.pack("!H", _csum(pseudo + l4)) + l4[off + 2:]
    return hdr + l4


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp_syn(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 8192, 0, 0)


def _tcp(sport: int, dport: int, flags: int, seq: int, ack: int = 0, win: int = 8192,
         payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                       flags, win, 0, 0) + payload


def lossy_tcp(c: str, s: str, cport: int, sport: int) -> list[bytes]:
    """IPv4 packets of a TCP exchange between two addresses nobody has, as a sensor in the
    middle of a lossy path sees it: the handshake, data with every third segment sent twice,
    a segment ahead of two missing ones that come next (out of order), a closed receive
    window (12 zero-window ACKs), 95 more retransmissions (Zeek's T at 1, 10 and 100, well
    past 16 history letters), a reply, and no FIN or RST (the flow stays open)."""
    ci, si = 0xFFFFFF00, 7000  # the client's sequence numbers wrap
    PA, A = 0x18, 0x10

    def cs(fl, seq, ack, payload=b""):
        return _ipv4(c, s, 6, _tcp(cport, sport, fl, seq, ack, payload=payload))

    def sc(fl, seq, ack, win=8192, payload=b""):
        return _ipv4(s, c, 6, _tcp(sport, cport, fl, seq, ack, win, payload))

    out = [cs(0x02, ci, 0), sc(0x12, si, ci + 1), cs(A, ci + 1, si + 1)]
    nxt = ci + 1
    for i in range(30):
        out.append(cs(PA, nxt, si + 1, b"x" * 100))
        if i % 3 == 0:
            out.append(cs(PA, nxt, si + 1, b"x" * 100))
        out.append(sc(A, si + 1, nxt + 100))
        nxt += 100
    out += [cs(PA, nxt + 200, si + 1, b"y" * 100), cs(PA, nxt, si + 1, b"y" * 100),
            cs(PA, nxt + 100, si + 1, b"y" * 100)]
    nxt += 300
    out += [sc(A, si + 1, nxt, win=0) for _ in range(12)]
    out += [cs(PA, nxt - 100, si + 1, b"y" * 100) for _ in range(95)]
    out.append(sc(PA, si + 1, nxt, payload=b"r" * 50))
    return out


def fragments(src: str, dst: str, ident: int, l4: bytes, size: int) -> list[bytes]:
    """IPv4 fragments (``size`` bytes of ``l4`` each, a multiple of 8) of one datagram."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    out = []
    for off in range(0, len(l4), size):
        part = l4[off:off + size]
        fw = (0x2000 if off + size < len(l4) else 0) | off // 8
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), ident, fw, 64, 17, 0, s, d)
        out.append(hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + part)
    return out


def vlan_frame(dst_mac: bytes, src_mac: bytes, vid: int, ip: bytes) -> bytes:
    return dst_mac + src_mac + struct.pack("!HHH", 0x8100, vid, 0x0800) + ip


def _raw_send(ifname: str, frames) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        for f in frames:
            s.send(f)
    finally:
        s.close()


def _peer_iface(addr: str) -> str:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         timeout=5).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts[3].split("/")[0] == addr:
            return parts[1]
    raise SystemExit(f"no interface holds {addr}")


def serve(a4: str, a6: str) -> None:
    """Answer the clients of ``drive`` until they are done or DEADLINE_S passes."""
    socks = []
    for fam, addr in ((socket.AF_INET, a4), (socket.AF_INET6, a6)):
        ports = (TCP_PORT, BULK_PORT, ABORT_PORT) if fam == socket.AF_INET else (TCP_PORT,)
        for port in ports:
            t = socket.socket(fam, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((addr, port))
            t.listen(4)
            socks.append(t)
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((addr, UDP_PORT))
        socks.append(u)
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # DNS over UDP
    d.bind((a4, DNS_PORT))
    socks.append(d)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # DNS over TCP
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((a4, DNS_PORT))
    t.listen(4)
    socks.append(t)
    print("ready", flush=True)
    end = time.monotonic() + DEADLINE_S
    tcp_done = udp_done = 0
    while time.monotonic() < end and (tcp_done < 5 or udp_done < 4):
        r, _, _ = select.select(socks, [], [], 0.2)
        for s in r:
            if s.type == socket.SOCK_STREAM:
                port = s.getsockname()[1]
                c, _ = s.accept()
                c.settimeout(5)
                try:
                    _serve_tcp(c, port)
                except OSError:
                    pass  # the aborted connection ends in a reset
                c.close()
                tcp_done += 1
            elif s.getsockname()[1] == DNS_PORT:
                data, peer = s.recvfrom(512)
                s.sendto(dns_answer(data), peer)
                udp_done += 1
            else:
                data, peer = s.recvfrom(100)
                s.sendto(b"pong:" + data, peer)
                udp_done += 1
    # one VLAN-tagged frame back towards the sensor's side (seen there on ingress)
    ifname = _peer_iface(a4)
    peer4 = str(ipaddress.ip_address(a4) - 1)
    _raw_send(ifname, [vlan_frame(b"\xff" * 6, _mac(ifname), 100,
                                  _ipv4(a4, peer4, 17, _udp(VLAN_PORT, VLAN_PORT, b"vlan-back")))])
    for s in socks:
        s.close()


def _recv_exactly(c: socket.socket, n: int) -> bytes:
    b = b""
    while len(b) < n:
        got = c.recv(n - len(b))
        if not got:
            break
        b += got
    return b


def _serve_tcp(c: socket.socket, port: int) -> None:
    if port == DNS_PORT:  # one length-prefixed query, its answer, then the client's FIN
        (n,) = struct.unpack("!H", _recv_exactly(c, 2) or b"\0\0")
        a = dns_answer(_recv_exactly(c, n))
        c.sendall(struct.pack("!H", len(a)) + a)
        while c.recv(100):
            pass
    elif port == BULK_PORT:  # a bulk transfer, then a clean close
        c.sendall(bytes(BULK_BYTES))
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
    elif port == ABORT_PORT:  # data until the client resets the connection (bounded)
        chunk = bytes(1000)
        for _ in range(2000):
            c.send(chunk)
            time.sleep(0.001)
    else:
        c.recv(100)
        c.sendall(b"world")
        while c.recv(100):  # until the client's FIN
            pass


def drive(a4: str, a6: str, ifname: str) -> None:
    """The client side; ``a4``/``a6`` are the peer's addresses."""
    local4 = str(ipaddress.ip_address(a4) - 1)
    for fam, addr in ((socket.AF_INET, a4), (socket.AF_INET6, a6)):
        with socket.socket(fam, socket.SOCK_STREAM) as c:  # data + clean close
            c.settimeout(5)
            c.connect((addr, TCP_PORT))
            c.sendall(b"hello")
            assert c.recv(100) == b"world"
            c.shutdown(socket.SHUT_WR)
            c.recv(100)
        with socket.socket(fam, socket.SOCK_DGRAM) as u:  # request / response
            u.settimeout(5)
            u.sendto(b"ping", (addr, UDP_PORT))
            u.recvfrom(100)
    with socket.socket() as c:  # bulk: 300 kB from the server, read to its FIN
        c.settimeout(5)
        c.connect((a4, BULK_PORT))
        got = 0
        while b := c.recv(65536):  # to EOF: our FIN then follows the server's at every hook
            got += len(b)
        assert got == BULK_BYTES, got
        c.shutdown(socket.SHUT_WR)
    with socket.socket() as c:  # abort: a RST sent while the server's data is in flight
        c.settimeout(5)
        c.connect((a4, ABORT_PORT))
        c.recv(3000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with socket.socket() as c:  # refused: SYN, then RST+ACK
        c.settimeout(5)
        try:
            c.connect((a4, REFUSED_PORT))
        except ConnectionRefusedError:
            pass
    subprocess.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", a4], check=True,
                   capture_output=True, timeout=10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:  # DNS over UDP: an answer
        u.settimeout(5)
        u.sendto(dns_query(0x1234, DNS_NAME), (a4, DNS_PORT))
        u.recvfrom(512)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:  # and NXDOMAIN (AAAA)
        u.settimeout(5)
        u.sendto(dns_query(0x2345, "nowhere.test", 28), (a4, DNS_PORT))
        u.recvfrom(512)
    with socket.socket() as c:  # DNS over TCP
        c.settimeout(5)
        c.connect((a4, DNS_PORT))
        q = dns_query(0x3456, DNS_NAME)
        c.sendall(struct.pack("!H", len(q)) + q)
        (n,) = struct.unpack("!H", _recv_exactly(c, 2))
        _recv_exactly(c, n)
        c.shutdown(socket.SHUT_WR)
        c.recv(100)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:  # a closed port: dropped
        u.sendto(b"anyone?", (a4, CLOSED_PORT))
    # raw frames: a half-open SYN from an address nobody answers ARP for (the SYN+ACK is
    # never sent), two VLAN-tagged frames (UDP and a TCP SYN) the peer ignores, and two
    # fragmented UDP datagrams to an address nobody has: one in order, one last fragment
    # first (its first fragment comes last)
    ghost = str(ipaddress.ip_address(a4) + 50)
    nobody = str(ipaddress.ip_address(a4) + 51)
    dst, src = b"\xff" * 6, _mac(ifname)
    frag_a = fragments(local4, nobody, 0x4242, _udp(FRAG_PORT, FRAG_PORT, b"a" * 200), 72)
    frag_b = fragments(local4, nobody, 0x4343, _udp(FRAG_PORT, FRAG_PORT, b"b" * 200), 72)
    _raw_send(ifname, [
        dst + src + b"\x08\x00" + _ipv4(ghost, a4, 6, _tcp_syn(40000, TCP_PORT)),
        vlan_frame(dst, src, 100, _ipv4(local4, a4, 17, _udp(VLAN_PORT, VLAN_PORT, b"vlan"))),
        vlan_frame(dst, src, 200, _ipv4(local4, a4, 6, _tcp_syn(40001, VLAN_PORT))),
        *(dst + src + b"\x08\x00" + f for f in frag_a),
    ])
    # the second datagram well after the first: a live flow's last-seen time comes from the
    # kernel's coarse clock (one tick, ~4 ms, behind at most), and Zeek's sizes need the
    # connection to have a duration
    time.sleep(0.05)
    _raw_send(ifname, [dst + src + b"\x08\x00" + f for f in frag_b[::-1]])
    # a lossy TCP exchange between two more addresses nobody has (both directions leave
    # through our interface; the peer drops them): retransmissions, out-of-order segments,
    # zero windows, Zeek's T/W letters after the 16th history letter, sizes without a FIN
    lossy = lossy_tcp(str(ipaddress.ip_address(a4) + 52), str(ipaddress.ip_address(a4) + 53),
                      41000, LOSSY_PORT)
    _raw_send(ifname, [dst + src + b"\x08\x00" + f for f in lossy])
    time.sleep(0.3)  # let the last ACKs and replies land


def one_cpu() -> None:
    """Stay on the highest CPU this process may use (see the module docstring)."""
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


if __name__ == "__main__":
    one_cpu()
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "drive":
        drive(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)

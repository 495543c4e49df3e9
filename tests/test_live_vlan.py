"""VLAN tags the stack keeps outside the frame (skb metadata), live against offline.

Root + BPF (failed under FLOWSCOPE_REQUIRE_BPF=1 without them). On receive the stack moves a
frame's outer VLAN tag into the skb before the TC ingress hook runs; on transmit a VLAN device
(or ``bpf_skb_vlan_push``) puts the tag there for a driver that inserts it, and veth offers
that offload. A capture shows such tags in the frame (libpcap inserts them again), so the TC
programs put the tag back in front of the frame's own tags and count its four bytes. Checked
against ``flowscope pcap`` on a tcpdump capture of the same packets, with ingress on XDP and on
tcx: tagged frames written into the veth from the test netns (802.1Q, 802.1ad, and 802.1ad over
802.1Q), and UDP from here given a tag on egress by a program ahead of ours in the tcx chain
(this kernel has no 802.1Q devices).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from bpf_helpers import require_bpf, sh, veth_netns
from test_live_tunnels import _live_beside_tcpdump

_seq = [0]
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FIELDS = ("proto", "src_ip", "dst_ip", "src_port", "dst_port", "init_pkts", "resp_pkts",
          "init_bytes", "resp_bytes", "init_ip_bytes", "resp_ip_bytes", "vlan", "init_mac",
          "resp_mac")
EGRESS_VID, EGRESS_PORT = 9, 5009

#: ahead of ours on egress: UDP to EGRESS_PORT gets an 802.1Q tag in the skb's metadata
PUSHER = r"""
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#include <bcc/proto.h>
int push_tag(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct udphdr *udp = (void *)ip + sizeof(*ip);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
        ip->protocol != 17 || udp->dest != bpf_htons(PORT))
        return TC_ACT_UNSPEC;
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VID);
    return TC_ACT_UNSPEC;
}
"""

#: run in the netns: tagged UDP frames from the peer to us (scripts/live_traffic.py's builders)
SENDER = r"""
import struct, sys
sys.path.insert(0, sys.argv[1])
from live_traffic import _ipv4, _raw_send, _udp
ifname, dst, src, a, b = sys.argv[2:7]
tags = {5001: [(0x8100, 5)], 5002: [(0x88a8, 6)], 5003: [(0x88a8, 7), (0x8100, 8)]}
frames = []
for sport, stack in tags.items():
    l2 = bytes.fromhex(dst) + bytes.fromhex(src)
    for tpid, vid in stack:
        l2 += struct.pack("!HH", tpid, vid)
    frames += [l2 + b"\x08\x00" + _ipv4(a, b, 17, _udp(sport, 9, b"tagged" * 4))] * 2
_raw_send(ifname, frames)
"""


@pytest.fixture
def pair():
    require_bpf("ip", "ethtool", "tcpdump")
    _seq[0] += 1
    tag = f"{os.getpid() % 1000}{_seq[0]}"
    with veth_netns(f"fsvl{tag}", 211, (os.getpid() + _seq[0]) % 200 + 20,
                    offloads_off=True) as (ifname, v4, _v6, ns):
        yield ifname, v4, ns, f"fsvl{tag}b"


def _records(path, prefix):
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "ended" and r["src_ip"].startswith(prefix):
            out.append(tuple(r.get(k) for k in FIELDS))
    return sorted(out, key=repr)


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_tags_outside_the_frame_live_equal_offline(pair, tmp_path, ingress):
    from flowscope.sensor import attach, loader

    ifname, v4, ns, peer = pair
    here = v4.rsplit(".", 1)[0] + ".1"
    bcc = loader.import_bcc()
    pusher = bcc.BPF(text=PUSHER.encode(),
                     cflags=[f"-DPORT={EGRESS_PORT}", f"-DVID={EGRESS_VID}"])
    link = attach.link_create(pusher.load_func(b"push_tag", bcc.BPF.SCHED_CLS).fd,
                              attach.ifindex_of(ifname), attach.BPF_TCX_EGRESS,
                              attach.BPF_F_BEFORE)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sensor:\n  ingress: {ingress}\n")
    mac = {n: json.loads(sh(*w, "ip", "-j", "link", "show", "dev", n).stdout)[0]["address"]
           .replace(":", "") for n, w in ((ifname, ()), (peer, ("ip", "netns", "exec", ns)))}

    def act():
        # ingress: tagged frames from the peer (the stack here drops them: no VLAN device)
        r = sh("ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(SCRIPTS), peer,
               mac[ifname], mac[peer], v4, here, check=False, timeout=30)
        assert r.returncode == 0, r.stderr
        # egress: UDP from here, tagged on its way out by the program ahead of ours
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"pushed" * 4, (v4, EGRESS_PORT))
                time.sleep(0.05)

    try:
        live, off, err = _live_beside_tcpdump(ifname, tmp_path, "jsonl", act,
                                              ("--config", str(cfg)))
    finally:
        os.close(link)
        pusher.cleanup()
    prefix = v4.rsplit(".", 1)[0] + "."
    got, want = _records(live, prefix), _records(off, prefix)
    assert got == want, err
    # what the capture shows: every tag, outer first (two ids are kept)
    vlans = {(r[FIELDS.index("src_port")] if r[FIELDS.index("dst_port")] == 9 else "out"):
             r[FIELDS.index("vlan")] for r in want}
    assert vlans == {5001: [5], 5002: [6], 5003: [7, 8], "out": [EGRESS_VID]}, want

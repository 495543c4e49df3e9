"""Kernel drops (tracepoint skb:kfree_skb) counted to their flows and by reason.

Root + BPF: the programs are attached to our end of a veth pair whose other end is in a test
netns; the drops are made there (a closed UDP port, an nftables drop rule), in the same kernel.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from bpf_helpers import frame_to, require_bpf, sh, veth_netns


@pytest.fixture
def drops_topo(request, monkeypatch):
    """A module with the drop tracer attached; ``request.param`` (indirect) names the one
    build of ``loader.DROP_TRACERS`` to load instead of the first the kernel takes."""
    require_bpf("ip", "nft")
    from flowscope.sensor import attach, loader, maps
    from flowscope.sensor import layout as L

    build = getattr(request, "param", None)
    if build is not None:
        monkeypatch.setattr(loader, "DROP_TRACERS", (build,))

    with veth_netns(f"fsdr{os.getpid() % 10000}", 206, os.getpid() % 200 + 20) as (ifname, v4,
                                                                                    v6, ns):
        mod = loader.load({"max_flows": 4096, "drops": 1})
        at = None
        try:
            at = attach.attach(mod, ifname)
            idx = socket.if_nametoindex(ifname)
            mod.bpf[b"fs_watched"][mod.bpf[b"fs_watched"].Key(idx)] = (
                mod.bpf[b"fs_watched"].Leaf(1))
            mod.attach_drops()
            yield mod, maps, L, ifname, v4, ns, idx, v6
        finally:
            if at is not None:
                at.detach()
            mod.close()


def _flow(maps, mod, port):
    keys, vals = maps.lookup_flows(mod.flows_fd, 1 << 12)
    sel = (keys["port_a"] == port) | (keys["port_b"] == port)
    return keys[sel], vals[sel]


def _wait(cond, limit=5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_closed_udp_port_drop_counts_to_its_flow(drops_topo):
    from flowscope.sensor.btf import drop_reason_names

    mod, maps, L, ifname, v4, ns, idx, _v6 = drops_topo
    names = {v: k for k, v in drop_reason_names().items()}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(3):
            u.sendto(b"anyone?", (v4, 9191))
    assert _wait(lambda: len(_flow(maps, mod, 9191)[1]) == 1
                 and int(_flow(maps, mod, 9191)[1]["drops"].sum()) == 3)
    keys, vals = _flow(maps, mod, 9191)
    # the initiator's orientation holds the drops, with the kernel's reason
    d = vals["drops"][0]
    fwd = int(vals["first_dir"][0])
    assert int(d[fwd]) == 3 and int(d[1 - fwd]) == 0
    assert int(vals["drop_reason"][0]) == names["NO_SOCKET"]
    c = maps.read_counters(mod.counters_fd)
    assert c[L.Counter.DROPS] >= 3


def test_nftables_drop_rule_counts_with_its_reason(drops_topo):
    from flowscope.sensor.btf import drop_reason_names

    mod, maps, L, ifname, v4, ns, idx, _v6 = drops_topo
    names = {v: k for k, v in drop_reason_names().items()}
    sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "fsdrop")
    sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "fsdrop", "input",
       "{ type filter hook input priority 0 ; }")
    sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "fsdrop", "input", "udp",
       "dport", "9292", "drop")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(2):
            u.sendto(b"blocked", (v4, 9292))
    assert _wait(lambda: int(_flow(maps, mod, 9292)[1]["drops"].sum()) == 2)
    _keys, vals = _flow(maps, mod, 9292)
    assert int(vals["drop_reason"][0]) == names["NETFILTER_DROP"]
    # by (interface, reason): the drops happened on the peer's device in the netns, which
    # the sensor does not watch: interface 0
    dk, dv = maps.drop_counts(mod.map_fd("fs_drop_counts"))
    got = {(int(k["ifindex"]), int(k["reason"])): int(v) for k, v in zip(dk, dv)}
    assert got.get((0, names["NETFILTER_DROP"]), 0) >= 2


def test_unrelated_drops_are_not_counted(drops_topo):
    mod, maps, L, ifname, v4, ns, idx, _v6 = drops_topo
    # a closed port inside the netns, from the netns itself: never on our interface, no flow
    sh("ip", "netns", "exec", ns, "python3", "-c",
       "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
       f"[s.sendto(b'x', ('{v4}', 9393)) for _ in range(3)]")
    time.sleep(0.3)
    assert len(_flow(maps, mod, 9393)[1]) == 0
    dk, dv = maps.drop_counts(mod.map_fd("fs_drop_counts"))
    assert int(dv.sum()) == 0


@pytest.mark.parametrize("drops_topo", ["fs_kfree_skb", "fs_kfree_skb_probe"], indirect=True)
@pytest.mark.parametrize("case", ["udp6", "udp4-ip-options", "tcp4-syn"])
def test_drops_count_to_their_flow_whatever_the_headers(drops_topo, case):
    """The ports of a dropped packet come from the bytes read with its IP header (IPv6,
    option-less IPv4) or from a read at its transport header (IPv4 with options, TCP), in
    both builds of the tracer (loads through skb->head, bpf_probe_read_kernel copies)."""
    mod, maps, L, ifname, v4, ns, idx, v6 = drops_topo
    assert mod.drops, mod.drops_error  # the build asked for loaded (6.17+ for fs_kfree_skb)
    port = {"udp6": 9494, "udp4-ip-options": 9595, "tcp4-syn": 9696}[case]
    if case == "tcp4-syn":  # a closed port: the SYN is dropped (NO_SOCKET), answered by a RST
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.settimeout(2)
            with pytest.raises(OSError):
                t.connect((v4, port))
        want = 1
    else:
        fam = socket.AF_INET6 if case == "udp6" else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            if case == "udp4-ip-options":
                u.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")
            for _ in range(3):
                u.sendto(b"anyone?", (v6 if case == "udp6" else v4, port))
        want = 3
    assert _wait(lambda: int(_flow(maps, mod, port)[1]["drops"].sum()) == want), case
    _keys, vals = _flow(maps, mod, port)
    fwd = int(vals["first_dir"][0])
    assert int(vals["drops"][0][fwd]) == want


def test_frames_for_another_host_are_no_drops(drops_topo):
    """A frame whose destination MAC is not the receiver's is dropped by the receiving
    stack (OTHERHOST): on a mirror port or a promiscuous link that is every frame not
    addressed to the sensor's host, which lost nothing. Such frees are not drops."""
    mod, maps, L, ifname, v4, ns, idx, _v6 = drops_topo
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as p:
        p.bind((ifname, 0))
        for _ in range(4):
            p.send(frame_to(ifname, b"\x02\x00\x00\x00\x00\x99", v4, 9797))
    assert _wait(lambda: int(_flow(maps, mod, 9797)[1]["pkts"].sum()) == 4)
    time.sleep(0.3)
    _keys, vals = _flow(maps, mod, 9797)
    assert int(vals["drops"].sum()) == 0
    dk, _dv = maps.drop_counts(mod.map_fd("fs_drop_counts"))
    from flowscope.sensor.btf import drop_reason_names

    other = {k for k, v in drop_reason_names().items() if v.endswith("OTHERHOST")}
    assert not other & {int(k["reason"]) for k in dk}
    # counted apart, for the sensor's mirror-port note (host-wide: other frames may add)
    assert maps.counters_dict(mod.counters_fd)["otherhost"] >= 4


def test_tracer_reads_the_skb_as_a_typed_tracepoint_program(drops_topo):
    """The tracer is loaded as a BTF-typed tracepoint program, whose sk_buff and net_device
    fields are plain loads. On kernels >= 6.17 the packet bytes behind skb->head are plain
    loads too (build fs_kfree_skb: no helper call reads anything); older verifiers refuse
    that build and the loader takes fs_kfree_skb_probe, which copies them with three
    bpf_probe_read_kernel calls (the IP header, its shorter retry, the ports after options).
    A raw tracepoint program would need a helper call for every field (docs/live.md,
    "Kernel drops")."""
    import ctypes
    import os

    from flowscope.sensor import loader
    from flowscope.sensor.ring import BPF_OBJ_GET_INFO_BY_FD, _InfoAttr

    mod = drops_topo[0]

    def info_of(fd):
        info = (ctypes.c_uint32 * 64)()
        loader.bpf_syscall(BPF_OBJ_GET_INFO_BY_FD,
                           _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info),
                                     info=ctypes.addressof(info)))
        return info[0], bytes(info)[64:80].rstrip(b"\0").decode()  # type, name

    def probe_reads(name):
        insns = mod.bpf.dump_func(name)
        return [int.from_bytes(insns[i + 4:i + 8], "little", signed=True)
                for i in range(0, len(insns), 8)
                if insns[i] == 0x85].count(113)  # BPF_JMP | BPF_CALL, BPF_FUNC_probe_read_kernel

    kind, name = info_of(mod.fds["fs_kfree_skb"])
    assert kind == loader.BPF_PROG_TYPE_TRACING
    assert probe_reads(b"fs_kfree_skb") == 0
    assert probe_reads(b"fs_kfree_skb_probe") == 3
    loaded = {}
    for build in loader.DROP_TRACERS:  # each on its own, against this verifier
        try:
            fd = loader.load_tp_btf(mod.bpf.dump_func(build.encode()), build,
                                    loader.drop_tracepoint_id())
        except OSError:
            continue
        try:
            loaded[build] = info_of(fd)
        finally:
            os.close(fd)
    # the older kernels' build passes every verifier that takes typed tracepoints
    assert loaded["fs_kfree_skb_probe"] == (loader.BPF_PROG_TYPE_TRACING, "fs_kfree_skb_pr")
    # the loader runs the direct build wherever the kernel takes it
    assert name == ("fs_kfree_skb" if "fs_kfree_skb" in loaded else "fs_kfree_skb_pr"), name
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 18):  # these type skb->head's bytes (from 6.17): no fallback
        assert "fs_kfree_skb" in loaded


def test_a_tracer_the_kernel_refuses_leaves_the_sensor_without_it(drops_topo, monkeypatch):
    """A refused tracer is one line (the verifier's last) and a module without it, not a
    failed start: Sensor.start reports the line and goes on (docs/live.md)."""
    from flowscope.sensor import loader

    mod = drops_topo[0]
    with pytest.raises(OSError) as exc:
        loader.load_tp_btf(mod.bpf.dump_func(b"fs_kfree_skb"), "fs_kfree_skb", 1)
    msg = str(exc.value)
    assert msg.startswith("[Errno") and "loading fs_kfree_skb:" in msg and "\n" not in msg

    def refuse(insns, name, btf_id):
        raise OSError(13, f"loading {name}: Permission denied")

    monkeypatch.setattr(loader, "load_tp_btf", refuse)
    other = loader.load({"max_flows": 1024, "drops": 1})
    try:
        assert not other.drops and "fs_kfree_skb" not in other.fds
        # both builds refused: the last one's refusal
        assert other.drops_error == "[Errno 13] loading fs_kfree_skb_probe: Permission denied"
        other.attach_drops()  # nothing to attach
        assert not other.drops_attached
    finally:
        other.close()

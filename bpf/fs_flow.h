/* SPDX-License-Identifier: MIT */
/*
 * fs_flow.h - the per-packet body shared by the XDP (ingress) and TC (egress) programs.
 *
 * Logic:
 *  1) Parse the frame (fs_parse.h). Unparseable -> one unmatched counter, done.
 *     A fragment of a TCP/UDP/SCTP datagram consults fs_frags (fs_frag_ports): a first
 *     fragment records its ports; a later one takes them, or, when its first fragment has not
 *     come yet, is held there (counted, no flow) until the first fragment brings the held
 *     counts into the datagram's flow (step 3b). Held fragments expire after
 *     FS_FRAG_TIMEOUT_NS from the datagram's first-seen fragment (FS_CNT_FRAG_ORPHANED).
 *  2) Build the canonical key: (addr, port) a <= b, and the packet's orientation.
 *  3) Look the flow up. Missing -> the flow filter (FS_FILTER) and the sampler (FS_SAMPLE_RATE)
 *     decide whether the flow is wanted (no -> FS_CNT_FILTERED / FS_CNT_SAMPLED_OUT, done); an
 *     existing entry passed them when it was made (the lists do not change while attached).
 *     Then insert a fresh entry (map full -> FS_CNT_MAP_FULL, done).
 *     An entry left in a terminal TCP state (Closed/Reset) restarts as a new flow, the way the
 *     userspace tracker starts a new flow for a later packet with the same key.
 *     An entry whose terminal event was lost (ring full: ev_lost) keeps counting instead, so
 *     the next map sync can still end that flow with every packet the kernel counted.
 *     Existing -> atomic adds of packets/bytes/payload/IP bytes for this orientation, OR of
 *     TCP flags. A pure ACK that can change nothing else but two sequence fields (the
 *     established fast path, fs_quiet_ack) does those, stamps last-seen and is done.
 *  4) TCP: track each orientation's sequence numbers, retransmissions, out-of-order segments
 *     and zero windows (fs_seq_step, FS_TCP_SEQ), count the history letters this packet adds
 *     (S, F, R, D; saturating at 16) and step the mirrored state machine (semantics.md
 *     rules 0-6).
 *  5) Send a control event to the ring buffer when userspace needs this packet to reproduce
 *     the offline events exactly; the rule (any one suffices):
 *       NEW   the packet created (or restarted) the flow entry;
 *       CTRL  a TCP packet with SYN, FIN or RST;
 *       DATA  a TCP packet with payload while the flow's history held < 16 letters before it;
 *       STATE the mirror changed state: besides SYN/FIN/RST packets this only happens for
 *             the initiator ACK of SynReceived->Established and any ACK of ClosingTcp->Closed;
 *       ZEEK  what the Zeek-style state needs besides those (fs_dir_bit): the first packet of
 *             each direction, the first pure ACK and the first data segment (no SYN/FIN/RST)
 *             of each direction, and every packet once both directions sent FIN or RST
 *             (Zeek stops a connection's clock there);
 *       SEQ   a direction's retransmission + out-of-order count or zero-window count reached
 *             1, 10, 100, ... (Zeek's T and W letters);
 *       SAMPLE with -DFS_PACKET_EVENTS=N, every Nth packet of a flow (N=1: every packet).
 *     Every other packet only updates the map. Events carry the flow counters after this
 *     packet, so userspace stats stay exact between events.
 * The caller always passes the packet on.
 */
#ifndef FS_FLOW_H
#define FS_FLOW_H

#include "fs_shared.h"
#include "fs_parse.h"
#include "fs_maps.h"
#include "fs_tunnel.h"

#ifndef FS_PACKET_EVENTS
#define FS_PACKET_EVENTS 0 /* 0: control events only; N > 0: also every Nth packet of a flow */
#endif
#ifndef FS_ATOMIC_COUNTERS
/* 1: per-flow packet/byte counters use atomic adds (exact when two CPUs hit the same flow
 * direction at once). 0: plain adds, ~15 ns cheaper per packet; a flow direction is normally
 * handled by one CPU at a time (one RX queue per flow), so losses need a true race. */
#define FS_ATOMIC_COUNTERS 1
#endif
#if FS_ATOMIC_COUNTERS
#define fs_add(p, v) __sync_fetch_and_add((p), (v))
#else
#define fs_add(p, v) (*(p) += (v))
#endif
#ifndef FS_FAST_PATH
#define FS_FAST_PATH 1 /* 1: pure ACKs that change nothing else take fs_quiet_ack (0: tests, A/B) */
#endif
#ifndef FS_FRAG_TIMEOUT_NS
#define FS_FRAG_TIMEOUT_NS 30000000000ULL /* fragment_timeout (layout.FRAG_TIMEOUT_S) */
#endif
#ifndef FS_KEY_VLAN
#define FS_KEY_VLAN 0 /* 1: the outer VLAN id is part of the flow key (key_vlan) */
#endif
#ifndef FS_KEY_ICMP
#define FS_KEY_ICMP 0 /* 1: ICMP keyed by type and paired type or code, as Zeek (key_icmp) */
#endif
#ifndef FS_FILTER
#define FS_FILTER 0 /* enum fs_filter_bit: the flow filter's lists in force (0: no filter) */
#endif
#ifndef FS_SAMPLE_RATE
#define FS_SAMPLE_RATE 1 /* keep 1 new flow in FS_SAMPLE_RATE (by fs_sample_hash of its key) */
#endif
#ifndef FS_TCP_SEQ
/* 1: per-orientation TCP sequence tracking in the flow entry (retransmissions, out-of-order
 * segments, zero windows, Zeek's sequence numbers; fs_seq_step). 0: off (those fields stay 0). */
#define FS_TCP_SEQ 1
#endif
#define FS_TOO_LARGE_SEQ_DELTA 1048576
#ifndef FS_DNS
/* 1: packets to or from port 53 (FS_DNS_PORT) whose payload can hold a DNS header send a
 * FS_EVR_DNS record with their first FS_DNS_BYTES payload bytes. 0: no DNS records. */
#define FS_DNS 1
#endif
#ifndef FS_DNS_PORT
#define FS_DNS_PORT 53 /* layout.DNS_PORT */
#endif

#ifndef FS_PRECISE_LAST_SEEN
/* 0: packets that produce no event stamp last_ns with the coarse clock (fs_last_seen: at most
 * one tick behind, two in a rare race) instead of bpf_ktime_get_ns() (~23 ns, a quarter of the
 * per-packet cost). last_ns only drives idle timeouts and the last-seen time of flows synced
 * from the map; event timestamps are always precise. */
#define FS_PRECISE_LAST_SEEN 0
#endif

static __always_inline void fs_count(__u32 idx, __u64 n)
{
	__u64 *v = fs_counters.lookup(&idx);
	if (v)
		*v += n; /* per-CPU slot: no atomic needed */
}

/*
 * Last-seen time of a packet that sends no event. The coarse clock (bpf_ktime_get_coarse_ns,
 * a helper call: ~15 ns measured, the largest single cost of an established packet) only
 * moves when the timekeeper is updated at a tick, which also advances jiffies. So the clock is
 * read only by a flow's first packet in each jiffy (bpf_jiffies64, which the verifier inlines
 * into one load, against last_jif); the later ones would read the same value. A packet that
 * runs between the jiffies increment and the timekeeper update reads the previous tick's
 * time, and the flow keeps it until its next jiffy: then last_ns is two ticks behind.
 */
static __always_inline void fs_last_seen(struct fs_flow *f)
{
#if FS_PRECISE_LAST_SEEN
	f->last_ns = bpf_ktime_get_ns();
#else
	__u64 j = bpf_jiffies64();
	if (j != f->last_jif) {
		f->last_jif = j;
		f->last_ns = bpf_ktime_get_coarse_ns();
	}
#endif
}

static __always_inline int fs_perr_counter(int err)
{
	if (err == FS_PERR_TRUNCATED)
		return FS_CNT_TRUNCATED;
	if (err == FS_PERR_NOT_IP)
		return FS_CNT_NOT_IP;
	return FS_CNT_BAD_HEADER;
}

/* History letters this TCP packet appends: S, F, R and D each count one. */
static __always_inline __u32 fs_letters(__u8 fl, __u32 payload_len)
{
	return !!(fl & FS_TH_SYN) + !!(fl & FS_TH_FIN) + !!(fl & FS_TH_RST) + (payload_len > 0);
}

/* One step of the TCP state machine; side 0 = initiator. Mirrors tcp_transition() in
 * flowscope/_kernels/engine.py; fin_side is updated on entry into FinWait. */
static __always_inline __u8 fs_tcp_step(__u8 st, __u8 side, __u8 fl, __u8 *fin_side)
{
	if (fl & FS_TH_RST)
		return FS_ST_RESET;
	switch (st) {
	case FS_ST_ACTIVE:
		if (side == 0 && (fl & FS_TH_SYN))
			return FS_ST_SYN_SENT;
		break;
	case FS_ST_SYN_SENT:
		if (side == 1 && (fl & FS_TH_SYN) && (fl & FS_TH_ACK))
			return FS_ST_SYN_RECEIVED;
		break;
	case FS_ST_SYN_RECEIVED:
		if (side == 0 && (fl & FS_TH_ACK))
			return FS_ST_ESTABLISHED;
		break;
	case FS_ST_ESTABLISHED:
		if (fl & FS_TH_FIN) {
			*fin_side = side;
			return FS_ST_FIN_WAIT;
		}
		break;
	case FS_ST_FIN_WAIT:
		if ((fl & FS_TH_FIN) && side != *fin_side)
			return FS_ST_CLOSING_TCP;
		break;
	case FS_ST_CLOSING_TCP:
		if (fl & FS_TH_ACK)
			return FS_ST_CLOSED;
		break;
	}
	return st;
}

/* Zeek's ScaledHistoryEntry thresholds: 1, 10, 100, ... */
static __always_inline int fs_is_scaled(__u32 n)
{
	return n == 1 || n == 10 || n == 100 || n == 1000 || n == 10000 || n == 100000 ||
	       n == 1000000 || n == 10000000 || n == 100000000 || n == 1000000000;
}

/* A packet with ACK, acknowledging orientation od (sf: the flow's FS_SQ_* bits): number a
 * silent od by the ACK, else advance od's acked sequence (not on a RST). */
static __always_inline void fs_seq_ack(struct fs_flow *f, __u8 sf, __u8 od, __u32 ack, int rst)
{
	if (!(sf & (FS_SQ_INIT_FWD << od))) {
		f->seq_start[od] = ack - 1;
		f->seq_acked[od] = ack - 1;
		f->seq_high[od] = ack - 1;
	} else if (!rst && (__s32)(ack - f->seq_start[od]) >= 0) {
		__s32 d = (__s32)(ack - f->seq_acked[od]);
		if (d > 0 && !(ack == 0 && d > FS_TOO_LARGE_SEQ_DELTA))
			f->seq_acked[od] = ack;
	}
}

/*
 * One TCP packet of orientation dir: the sequence rules of flowscope/_kernels/tcpseq.py
 * (seq_step), step for step. Returns 1 when this direction's retransmission + out-of-order
 * count or its zero-window count reached a Zeek threshold (the packet must be an event: it
 * carries a T or W letter). Plain stores: a direction is handled by one CPU at a time.
 */
static __always_inline int fs_seq_step(struct fs_flow *f, __u8 dir, const struct fs_pkt *p)
{
	__u8 od = (dir ^ 1) & 1;
	__u8 fl = p->tcp_flags;
	int syn = !!(fl & FS_TH_SYN), fin = !!(fl & FS_TH_FIN), rst = !!(fl & FS_TH_RST);
	__u32 seq = p->seq, ln = p->payload_len;
	__u32 end = seq + (rst ? 0 : ln) + syn + fin;
	__u8 sf = f->seq_flags;
	__u8 init_bit = FS_SQ_INIT_FWD << dir, hole_bit = FS_SQ_HOLE_FWD << dir;
	int hit = 0;

	if (!(sf & init_bit)) {
		__u32 st = syn ? seq : seq - 1;
		f->seq_start[dir] = st;
		f->seq_acked[dir] = st;
		f->seq_high[dir] = syn ? end : seq;
		sf = (sf | init_bit) & ~hole_bit;
	} else if (syn && seq != f->seq_start[dir]) {
		f->seq_start[dir] = seq;
		f->seq_acked[dir] = seq;
		f->seq_high[dir] = end;
		sf &= ~hole_bit;
	}
	/* zero window: no RST, the other orientation has not sent a FIN */
	if (p->window == 0 && !rst && !(sf & (FS_SQ_FIN_FWD << od))) {
		__u32 n = f->zero_win[dir] + 1;
		f->zero_win[dir] = n;
		hit |= fs_is_scaled(n);
	}
	if (fin)
		sf |= FS_SQ_FIN_FWD << dir;
	/* acks: number a silent peer, else advance its acked sequence */
	if (fl & FS_TH_ACK) {
		fs_seq_ack(f, sf, od, p->ack, rst);
	}
	/* highest sequence, retransmissions, the hole */
	__u32 high = f->seq_high[dir];
	__s32 delta = (__s32)(end - high);
	if ((syn || rst) && (delta > FS_TOO_LARGE_SEQ_DELTA || delta < -FS_TOO_LARGE_SEQ_DELTA)) {
		/* ignored, as Zeek does */
	} else if (delta > 0 || (fin && high == f->seq_start[dir] + 1)) {
		/* a data segment or FIN beyond the highest sequence leaves a hole behind it */
		if ((ln || fin) && !syn && !rst && (__s32)(seq - high) > 0) {
			f->hole_lo[dir] = high;
			f->hole_hi[dir] = seq;
			sf |= hole_bit;
		}
		f->seq_high[dir] = end;
	} else if (ln) {
		__u32 lo = f->hole_lo[dir], hi = f->hole_hi[dir];
		if ((sf & hole_bit) && (__s32)(seq - lo) >= 0 && (__s32)(end - hi) <= 0 &&
		    (__s32)(end - seq) > 0) {
			f->ooo_pkts[dir] += 1;
			if (seq == lo)
				f->hole_lo[dir] = lo = end;
			else if (end == hi)
				f->hole_hi[dir] = hi = seq;
			if ((__s32)(hi - lo) <= 0)
				sf &= ~hole_bit;
		} else {
			f->rtx_pkts[dir] += 1;
			f->rtx_bytes[dir] += ln;
		}
		hit |= fs_is_scaled(f->rtx_pkts[dir] + f->ooo_pkts[dir]);
	}
	if (sf != f->seq_flags)
		f->seq_flags = sf;
	return hit;
}

/*
 * The value v, as a value the verifier cannot know (a store to and a load from a per-CPU map
 * slot, a few ns). A value the verifier tracks precisely (a size handed to a helper, a branch
 * it can decide) is tracked so back to where it was set: a value that differs from one way
 * through the parser to the next then has the verifier check everything in between once per
 * way. Laundering it stops that.
 */
static __always_inline __u64 fs_launder(__u64 v)
{
	__u32 zero = 0;
	__u64 *slot = fs_opaque_slot.lookup(&zero);
	if (!slot) /* cannot happen (array index 0) */
		return v;
	*slot = v;
	asm volatile("" ::: "memory");
	return *slot;
}

/* dns: copy the first payload bytes of a FS_EVR_DNS packet into its record. The program type
 * decides the helper (is_xdp is a constant at each entry point, so the other branch is
 * compiled out); both read beyond the linear area too. */
static __always_inline void fs_dns_copy(void *ctx, int is_xdp, struct fs_dns_event *d,
                                        const struct fs_pkt *p, __u32 frame_len)
{
	__builtin_memset(&d->dns_len, 0, sizeof(*d) - sizeof(d->ev));
	frame_len += p->tun_off; /* a decapsulated packet's frame_len counts from tun_off */
	if (p->pay_off >= frame_len)
		return;
	/* n is 64-bit and masked after a barrier: payload_len comes from a signed length, and
	 * without this the compiler hands the helper the register before its clamps, of a range
	 * the verifier rejects */
	__u64 n = p->payload_len;
	asm volatile("" : "+r"(n));
	n &= 0xffff;
	if (n > frame_len - p->pay_off)
		n = frame_len - p->pay_off;
	/* laundered (DNS records only): as the helper's size, n would make the verifier track
	 * payload_len and pay_off, which the parser sets differently on each way through it */
	n = fs_launder(n);
	if (n > FS_DNS_BYTES)
		n = FS_DNS_BYTES;
	if (n == 0)
		return;
	int rc;
	if (is_xdp)
		rc = bpf_xdp_load_bytes(ctx, p->pay_off, d->dns, n);
	else
		rc = bpf_skb_load_bytes(ctx, p->pay_off, d->dns, n);
	if (rc == 0)
		d->dns_len = n;
}

/* The event record of this packet into e (ring memory). */
static __always_inline void fs_fill(struct fs_event *e, const struct fs_flow_key *k,
                                    const struct fs_flow *f, const struct fs_pkt *p, __u64 now,
                                    __u32 frame_len, __u32 ifindex, __u8 hook, __u8 dir,
                                    __u8 reason, const struct fs_flow_key *parent)
{
	/* Ring memory is not zeroed: clear everything first so records are deterministic. */
	__builtin_memset(e, 0, sizeof(*e));
	e->key = *k;
	e->ts_ns = now;
	e->first_ns = f->first_ns;
	e->pkts[0] = f->pkts[0];
	e->pkts[1] = f->pkts[1];
	e->bytes[0] = f->bytes[0];
	e->bytes[1] = f->bytes[1];
	e->payload[0] = f->payload[0];
	e->payload[1] = f->payload[1];
	e->ip_bytes[0] = f->ip_bytes[0];
	e->ip_bytes[1] = f->ip_bytes[1];
	e->seq = p->seq;
	e->ack = p->ack;
	e->frame_len = frame_len;
	e->payload_len = p->payload_len;
	e->gen = f->gen;
	e->ifindex = ifindex;
	e->ip_len = p->ip_len;
	e->window = p->window;
	e->dir = dir;
	e->tcp_flags = p->tcp_flags;
	e->reason = reason;
	e->first_dir = f->first_dir;
	e->state = f->state;
	e->hist_len = f->hist_len;
	e->hook = hook;
	e->pflags = p->pflags;
	e->icmp_type = p->icmp_type;
	e->icmp_code = p->icmp_code;
	e->flags_or[0] = f->tcp_flags[0];
	e->flags_or[1] = f->tcp_flags[1];
	e->smac = p->smac;
	e->dmac = p->dmac;
	e->vlan[0] = p->vlan[0];
	e->vlan[1] = p->vlan[1];
	e->nvlan = p->nvlan;
#if FS_TCP_SEQ
	{
		e->seq_start[0] = f->seq_start[0];
		e->seq_start[1] = f->seq_start[1];
		e->seq_high[0] = f->seq_high[0];
		e->seq_high[1] = f->seq_high[1];
		e->seq_acked[0] = f->seq_acked[0];
		e->seq_acked[1] = f->seq_acked[1];
		e->rtx_pkts[0] = f->rtx_pkts[0];
		e->rtx_pkts[1] = f->rtx_pkts[1];
		e->ooo_pkts[0] = f->ooo_pkts[0];
		e->ooo_pkts[1] = f->ooo_pkts[1];
		e->zero_win[0] = f->zero_win[0];
		e->zero_win[1] = f->zero_win[1];
		e->rtx_bytes[0] = f->rtx_bytes[0];
		e->rtx_bytes[1] = f->rtx_bytes[1];
		e->seq_flags = f->seq_flags &
		               (FS_SQ_INIT_FWD | FS_SQ_INIT_REV | FS_SQ_FIN_FWD | FS_SQ_FIN_REV);
	}
#endif
	e->drops[0] = f->drops[0];
	e->drops[1] = f->drops[1];
	e->drop_reason = f->drop_reason;
	/* tunnels: NULL parent (a constant at the entry points) for the frame's outer packet */
	if (parent) {
		e->tun_parent = *parent;
		e->tun_key = p->tun_key;
		e->tun_type = p->tun_type;
		e->tun_depth = p->tun_depth;
		e->tun_ether = p->tun_ether;
	}
}

/* Submit one event; returns 0, or -1 when the ring was full (counted). FS_EVR_DNS events are
 * a struct fs_dns_event with the packet's first payload bytes. The two kinds are reserved,
 * filled and submitted in separate branches: the verifier then knows each record's size. */
static __always_inline int fs_emit(void *ctx, int is_xdp, const struct fs_flow_key *k,
                                   const struct fs_flow *f, const struct fs_pkt *p, __u64 now,
                                   __u32 frame_len, __u32 ifindex, __u8 hook, __u8 dir, __u8 reason,
                                   const struct fs_flow_key *parent)
{
#if FS_DNS
	if (reason & FS_EVR_DNS) {
		struct fs_dns_event *d = fs_events.ringbuf_reserve(sizeof(struct fs_dns_event));
		if (!d) {
			fs_count(FS_CNT_RING_FULL, 1);
			return -1;
		}
		fs_fill(&d->ev, k, f, p, now, frame_len, ifindex, hook, dir, reason, parent);
		fs_dns_copy(ctx, is_xdp, d, p, frame_len);
		fs_count(FS_CNT_DNS, 1);
		fs_events.ringbuf_submit(d, 0);
	} else
#endif
	{
		struct fs_event *e = fs_events.ringbuf_reserve(sizeof(struct fs_event));
		if (!e) {
			fs_count(FS_CNT_RING_FULL, 1);
			return -1;
		}
		fs_fill(e, k, f, p, now, frame_len, ifindex, hook, dir, reason, parent);
		fs_events.ringbuf_submit(e, 0);
	}
	fs_count(FS_CNT_EVENTS, 1);
	return 0;
}

/* The fs_dir_bit bits one TCP packet sets for its direction. */
static __always_inline __u8 fs_tcp_dir_bits(__u8 fl, __u32 payload_len)
{
	if (fl & (FS_TH_FIN | FS_TH_RST))
		return FS_DB_CLOSE;
	if (fl & FS_TH_SYN)
		return 0;
	if (payload_len)
		return FS_DB_DATA;
	return (fl & FS_TH_ACK) ? FS_DB_ACK : 0;
}

/* Held fragments a first fragment brings into its flow. */
struct fs_held {
	__u64 pkts, bytes, payload, ip_bytes;
};

/*
 * The fragment map step, for a fragment of a TCP/UDP/SCTP datagram; the same rules as the
 * offline engine's fragment table (flowscope/_kernels/frag.py). Returns 1 when the packet is
 * held (no flow yet), else 0 with p's ports set for a non-first fragment and, for a first
 * fragment, the counts of the fragments held before it in *held.
 */
static __always_inline int fs_frag_ports(struct fs_pkt *p, __u32 frame_len, __u64 now,
                                         struct fs_held *held)
{
	struct fs_frag_key fk = {};
	struct fs_frag nf = {};
	fk.src_hi = p->src_hi;
	fk.src_lo = p->src_lo;
	fk.dst_hi = p->dst_hi;
	fk.dst_lo = p->dst_lo;
	fk.id = p->frag_id;
	fk.l3 = p->l3;
	fk.proto = p->proto;
	struct fs_frag *fe = fs_frags.lookup(&fk);
	int live = fe && now - fe->first_ns < FS_FRAG_TIMEOUT_NS;
	if (p->pflags & FS_PF_FRAG) {
		if (live && fe->has_ports) {
			p->sport = fe->sport;
			p->dport = fe->dport;
			fs_count(FS_CNT_FRAG_KEYED, 1);
			return 0;
		}
		fs_count(FS_CNT_FRAG_HELD, 1);
		if (live) {
			__sync_fetch_and_add(&fe->pkts, 1);
			__sync_fetch_and_add(&fe->bytes, frame_len);
			__sync_fetch_and_add(&fe->payload, p->payload_len);
			__sync_fetch_and_add(&fe->ip_bytes, p->ip_len);
			return 1;
		}
		if (fe && !fe->has_ports)
			fs_count(FS_CNT_FRAG_ORPHANED, fe->pkts);
		nf.first_ns = now;
		nf.pkts = 1;
		nf.bytes = frame_len;
		nf.payload = p->payload_len;
		nf.ip_bytes = p->ip_len;
		fs_frags.update(&fk, &nf);
		return 1;
	}
	/* a first fragment */
	nf.first_ns = now;
	if (fe && !fe->has_ports) {
		if (live) {
			held->pkts = fe->pkts;
			held->bytes = fe->bytes;
			held->payload = fe->payload;
			held->ip_bytes = fe->ip_bytes;
			fs_count(FS_CNT_FRAG_RESOLVED, held->pkts);
			fs_count(FS_CNT_FRAG_KEYED, held->pkts);
		} else {
			fs_count(FS_CNT_FRAG_ORPHANED, fe->pkts);
		}
	}
	if (live)
		nf.first_ns = fe->first_ns;
	if (p->pflags & FS_PF_PORTS) {
		nf.sport = p->sport;
		nf.dport = p->dport;
	}
	nf.has_ports = 1;
	fs_frags.update(&fk, &nf);
	return 0;
}

static __always_inline __u64 fs_smix(__u64 h, __u64 w)
{
	h = (h ^ w) * FS_HASH_M1;
	return h ^ (h >> 31);
}

/* The sampling hash of a key: the same words and mixing as sample_hash() in
 * flowscope/_kernels/flowfilter.py (meta = l3 << 48 | proto << 32 | port_a << 16 | port_b). */
static __always_inline __u64 fs_sample_hash(const struct fs_flow_key *k)
{
	__u64 meta = (__u64)k->l3 << 48 | (__u64)k->proto << 32 | (__u64)k->port_a << 16 |
	             k->port_b | (__u64)(k->vlan & 0xFF) << FS_META_VLAN_LO_SHIFT |
	             (__u64)((k->vlan >> 8) & 0xF) << FS_META_VLAN_HI_SHIFT;
	__u64 h = fs_smix(FS_SAMPLE_SEED, k->a_hi);
	h = fs_smix(h, k->a_lo);
	h = fs_smix(h, k->b_hi);
	h = fs_smix(h, k->b_lo);
	h = fs_smix(h, meta);
	h = (h ^ (h >> 27)) * FS_HASH_M2;
	return h ^ (h >> 33);
}

/* The LPM key of one address of a flow key (addresses are host-order words of big-endian
 * bytes: swap back to network order). */
static __always_inline void fs_cidr_key_of(struct fs_cidr_key *ck, __u8 l3, __u64 hi, __u64 lo)
{
	ck->l3 = l3;
	if (l3 == FS_L3_IPV4) {
		__u32 a = __builtin_bswap32((__u32)lo);
		ck->prefixlen = 8 + 32;
		__builtin_memcpy(ck->addr, &a, 4);
	} else {
		__u64 h = __builtin_bswap64(hi), l = __builtin_bswap64(lo);
		ck->prefixlen = 8 + 128;
		__builtin_memcpy(ck->addr, &h, 8);
		__builtin_memcpy(ck->addr + 8, &l, 8);
	}
}

/* The marks (enum fs_filter_mark) of a port or protocol; 0 when unmarked. */
static __always_inline __u8 fs_port_marks(__u32 port)
{
	__u8 *v = fs_flt_ports.lookup(&port);
	return v ? *v : 0;
}

static __always_inline __u8 fs_proto_marks(__u32 proto)
{
	__u8 *v = fs_flt_protos.lookup(&proto);
	return v ? *v : 0;
}

/*
 * Does the flow filter let this new flow in? The rules of flowscope/flowfilter.py: every list
 * in force (FS_FILTER, a compile-time constant: lists not in force cost nothing) must let it
 * through; both addresses and both ports are looked at alike, so both directions agree.
 */
static __always_inline int fs_filter_passes(const struct fs_flow_key *k)
{
	if (FS_FILTER & (FS_FLT_INC_PROTOS | FS_FLT_EXC_PROTOS)) {
		__u8 m = fs_proto_marks(k->proto);
		if ((FS_FILTER & FS_FLT_INC_PROTOS) && !(m & FS_FLT_IN))
			return 0;
		if ((FS_FILTER & FS_FLT_EXC_PROTOS) && (m & FS_FLT_EX))
			return 0;
	}
	if (FS_FILTER & (FS_FLT_INC_PORTS | FS_FLT_EXC_PORTS)) {
		__u8 m = fs_port_marks(k->port_a) | fs_port_marks(k->port_b);
		if ((FS_FILTER & FS_FLT_INC_PORTS) && !(m & FS_FLT_IN))
			return 0;
		if ((FS_FILTER & FS_FLT_EXC_PORTS) && (m & FS_FLT_EX))
			return 0;
	}
	if (FS_FILTER & (FS_FLT_INC_CIDRS | FS_FLT_EXC_CIDRS)) {
		struct fs_cidr_key ca = {}, cb = {};
		fs_cidr_key_of(&ca, k->l3, k->a_hi, k->a_lo);
		fs_cidr_key_of(&cb, k->l3, k->b_hi, k->b_lo);
		if ((FS_FILTER & FS_FLT_INC_CIDRS) && !fs_flt_cidr_in.lookup(&ca) &&
		    !fs_flt_cidr_in.lookup(&cb))
			return 0;
		if ((FS_FILTER & FS_FLT_EXC_CIDRS) &&
		    (fs_flt_cidr_ex.lookup(&ca) || fs_flt_cidr_ex.lookup(&cb)))
			return 0;
	}
	return 1;
}

/* (Re)initialise an entry for a flow whose first packet is p. Constant indices only: with a
 * variable index into a stack copy, LLVM turns "base + dir * 8" into "base | dir * 8" (it
 * knows the stack slot's alignment) and the verifier rejects bitwise ops on pointers. */
static __always_inline void fs_flow_init(struct fs_flow *f, const struct fs_pkt *p, __u64 now,
                                         __u32 frame_len, __u8 dir)
{
	__u32 gen = f->gen;
	__builtin_memset(f, 0, sizeof(*f));
	f->gen = gen;
	f->first_ns = now;
	f->last_ns = now;
	__u8 db = FS_DB_SEEN;
	if (p->pflags & FS_PF_TCP)
		db |= fs_tcp_dir_bits(p->tcp_flags, p->payload_len);
	if (dir) {
		f->pkts[1] = 1;
		f->bytes[1] = frame_len;
		f->payload[1] = p->payload_len;
		f->ip_bytes[1] = p->ip_len;
		f->tcp_flags[1] = p->tcp_flags;
		f->dir_bits[1] = db;
		f->first_dir = 1;
	} else {
		f->pkts[0] = 1;
		f->bytes[0] = frame_len;
		f->payload[0] = p->payload_len;
		f->ip_bytes[0] = p->ip_len;
		f->tcp_flags[0] = p->tcp_flags;
		f->dir_bits[0] = db;
	}
}

/*
 * The established fast path: a pure ACK (ACK, no SYN/FIN/RST, no payload) of an existing flow
 * whose counters are already added. Returns 1 when the packet needs nothing else, having done
 * what the rest of fs_process would do for it: with a nonzero window, the direction's sequence
 * numbers set, its first pure ACK already seen (fs_dir_bit), not both directions closed, and
 * the mirror outside the two ACK-sensitive states, the rest sends no event and changes nothing
 * but the sequence fields fs_seq_step sets for such a packet (the ACK numbers or advances the
 * other orientation; end = seq may raise seq_high, without a hole) and last_ns.
 */
static __always_inline int fs_quiet_ack(struct fs_flow *f, __u8 dir, const struct fs_pkt *p,
                                        const struct fs_held *held)
{
	__u8 want = FS_DB_SEEN | FS_DB_ACK;
	__u8 db = f->dir_bits[dir];
	__u8 st = f->state;

	if (!FS_FAST_PATH || FS_PACKET_EVENTS > 0 || !(p->pflags & FS_PF_TCP) || p->payload_len ||
	    held->pkts ||
	    (p->tcp_flags & (FS_TH_SYN | FS_TH_FIN | FS_TH_RST | FS_TH_ACK)) != FS_TH_ACK ||
	    (db & want) != want || (db & f->dir_bits[dir ^ 1] & FS_DB_CLOSE) ||
	    st == FS_ST_SYN_RECEIVED || st == FS_ST_CLOSING_TCP)
		return 0;
#if FS_TCP_SEQ
	__u8 sf = f->seq_flags;
	if (p->window == 0 || !(sf & (FS_SQ_INIT_FWD << dir)))
		return 0;
	fs_seq_ack(f, sf, (dir ^ 1) & 1, p->ack, 0);
	if ((__s32)(p->seq - f->seq_high[dir]) > 0)
		f->seq_high[dir] = p->seq;
#endif
	fs_last_seen(f);
	return 1;
}

/*
 * reason through fs_launder. reason holds a different known value on each path through the
 * parser, the sequence step and the state mirror, and the verifier checks everything after it
 * once per value: with TCP sequence tracking, DNS records, the filter and the context fields
 * compiled in, that exceeds its budget of 1M processed instructions. Laundering reason after
 * the sequence step (TCP packets) and before the event (evented packets) merges those states.
 */
static __always_inline __u8 fs_opaque(__u8 v)
{
	return (__u8)fs_launder(v);
}

/* key_icmp: the ports Zeek keys an ICMP/ICMPv6 message by (its ICMP4_counterpart /
 * ICMP6_counterpart; the tables of layout.ICMP_PAIRS / ICMP6_PAIRS): (type, paired type) for
 * request/reply types, else (type, code). Only ICMP packets come here. */
static __always_inline void fs_icmp_key_ports(struct fs_pkt *p)
{
	__u32 t = p->icmp_type;
	int other = -1;
	if (p->proto == IPPROTO_ICMP) {
		if (t == 8 || t == 0)
			other = 8 - t;
		else if (t == 13 || t == 15 || t == 17)
			other = t + 1;
		else if (t == 14 || t == 16 || t == 18)
			other = t - 1;
		else if (t == 9 || t == 10)
			other = 19 - t;
	} else {
		if (t == 128 || t == 130 || t == 133 || t == 135 || t == 139 || t == 144)
			other = t + 1;
		else if (t == 129 || t == 131 || t == 134 || t == 136 || t == 140 || t == 145)
			other = t - 1;
	}
	/* the ports leave through the per-CPU slot (as in fs_opaque): each branch above knows
	 * its type as a constant, and would otherwise verify the rest of the program apart */
	__u64 w = (__u64)t << 16 | (other >= 0 ? (__u32)other : p->icmp_code);
	__u32 zero = 0;
	__u64 *slot = fs_opaque_slot.lookup(&zero);
	if (slot) {
		*slot = w;
		asm volatile("" ::: "memory");
		w = *slot;
	}
	p->sport = w >> 16;
	p->dport = w & 0xFFFF;
	p->pflags |= FS_PF_PORTS;
}

/* The canonical key of p into *k (step 2); returns the packet's orientation. */
static __always_inline __u8 fs_key_of(const struct fs_pkt *p, struct fs_flow_key *k)
{
	__u8 dir;
	if (p->src_hi < p->dst_hi ||
	    (p->src_hi == p->dst_hi &&
	     (p->src_lo < p->dst_lo || (p->src_lo == p->dst_lo && p->sport <= p->dport)))) {
		dir = FS_DIR_FWD;
		k->a_hi = p->src_hi;
		k->a_lo = p->src_lo;
		k->b_hi = p->dst_hi;
		k->b_lo = p->dst_lo;
		k->port_a = p->sport;
		k->port_b = p->dport;
	} else {
		dir = FS_DIR_REV;
		k->a_hi = p->dst_hi;
		k->a_lo = p->dst_lo;
		k->b_hi = p->src_hi;
		k->b_lo = p->src_lo;
		k->port_a = p->dport;
		k->port_b = p->sport;
	}
	k->l3 = p->l3;
	k->proto = p->proto;
	/* key_vlan: no branch (vlan[0] is 0 without a tag): one more way through the rest of the
	 * program would double what the verifier walks */
	k->vlan = FS_KEY_VLAN ? p->vlan[0] : 0;
	return dir;
}

/*
 * Steps 1b-5 for one parsed packet p: the frame's outer packet (parent NULL, a constant at the
 * entry points) or a decapsulated one (parent: the key of the flow around it; frame_len counts
 * from p->tun_off).
 */
static __always_inline void fs_account(void *ctx, int is_xdp, struct fs_pkt *p, __u32 frame_len,
                                       __u32 ifindex, __u8 hook, const struct fs_flow_key *parent)
{
	struct fs_flow_key k = {};
	struct fs_flow *f;
	struct fs_held held = {};
	__u8 dir, reason = 0;
	__u64 now = 0;
	/* tunnels: the parent flow of this packet, 0 for none (a constant at the entry points) */
	__u64 tpar = parent ? (fs_sample_hash(parent) | 1) : 0;

	if (p->l4_short)
		fs_count(FS_CNT_TRUNCATED_L4, 1);
	if (FS_KEY_ICMP && (p->pflags & (FS_PF_ICMP | FS_PF_PORTS)) == FS_PF_ICMP &&
	    (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6))
		fs_icmp_key_ports(p);
	if ((p->pflags & (FS_PF_FRAG | FS_PF_MORE_FRAGS)) &&
	    (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP ||
	     (FS_KEY_ICMP && (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)))) {
		now = bpf_ktime_get_ns();
		if (fs_frag_ports(p, frame_len, now, &held))
			return;
	}

	/* 2) canonical key */
	dir = fs_key_of(p, &k);
	dir &= 1; /* keeps the verifier's range of dir at [0, 1] for the [2] arrays */

	/* 3) find or create the entry */
	f = fs_flows.lookup(&k);
	if (!f) {
		/* 3a) filter and sampler: a flow they leave out gets no entry */
		if (FS_FILTER && !fs_filter_passes(&k)) {
			fs_count(FS_CNT_FILTERED, 1 + held.pkts);
			return;
		}
		if (FS_SAMPLE_RATE > 1 && fs_sample_hash(&k) % FS_SAMPLE_RATE) {
			fs_count(FS_CNT_SAMPLED_OUT, 1 + held.pkts);
			return;
		}
		__u32 zero = 0;
		struct fs_flow *nf = fs_scratch.lookup(&zero);
		if (!nf) /* cannot happen (array index 0); keeps the verifier content */
			return;
		now = bpf_ktime_get_ns();
		nf->gen = 0;
		fs_flow_init(nf, p, now, frame_len, dir);
		nf->tun_parent = tpar;
		int rc = fs_flows.insert(&k, nf);
		if (rc == 0) {
			fs_count(FS_CNT_FLOWS_NEW, 1);
			f = fs_flows.lookup(&k);
			if (!f) /* deleted by a concurrent sweep in between: count as lost */
				return;
			reason = FS_EVR_NEW;
		} else {
			f = fs_flows.lookup(&k);
			if (!f) {
				/* -E2BIG: the map is full; anything else is just as final here. */
				fs_count(FS_CNT_MAP_FULL, 1);
				return;
			}
			/* Another CPU inserted the same flow first: count on its entry. */
			fs_count(FS_CNT_INSERT_RACE, 1);
			goto existing;
		}
	} else if (f->state >= FS_ST_CLOSED && !f->ev_lost) {
		/* The flow ended (FIN handshake done or RST): userspace closed it, so this packet
		 * starts a new one with the same key. Plain stores: the old flow is finished. */
		now = bpf_ktime_get_ns();
		fs_flow_init(f, p, now, frame_len, dir);
		f->gen += 1;
		f->tun_parent = tpar;
		fs_count(FS_CNT_FLOWS_RESTART, 1);
		reason = FS_EVR_NEW;
	} else {
existing:
		fs_add(&f->pkts[dir], 1);
		fs_add(&f->bytes[dir], frame_len);
		fs_add(&f->ip_bytes[dir], p->ip_len);
		if (p->payload_len)
			fs_add(&f->payload[dir], p->payload_len);
		/* Store only when a new flag shows up: keeps the cache line clean on the hot path. */
		if ((f->tcp_flags[dir] & p->tcp_flags) != p->tcp_flags)
			f->tcp_flags[dir] |= p->tcp_flags;
		/* (the fast path keeps the encapsulation: a change takes the full path) */
		if (f->tun_parent == tpar && fs_quiet_ack(f, dir, p, &held))
			return;
		/* 4a) what the Zeek-style state needs: first packet / pure ACK / data of a direction,
		 * and every packet after both directions closed (FS_DB_*). */
		__u8 db = f->dir_bits[dir];
		__u8 want = FS_DB_SEEN;
		if (p->pflags & FS_PF_TCP)
			want |= fs_tcp_dir_bits(p->tcp_flags, p->payload_len);
		if ((db & want) != want) {
			f->dir_bits[dir] = db | want;
			reason |= FS_EVR_ZEEK;
		} else if (db & f->dir_bits[dir ^ 1] & FS_DB_CLOSE) {
			reason |= FS_EVR_ZEEK;
		}
		/* tunnels: an encapsulation change is an event (Zeek's CheckEncapsulation) */
		if (f->tun_parent != tpar) {
			f->tun_parent = tpar;
			reason |= FS_EVR_ZEEK;
		}
	}

	/* 3b) fragments held before this first fragment join its flow, on its side */
	if (held.pkts) {
		fs_add(&f->pkts[dir], held.pkts);
		fs_add(&f->bytes[dir], held.bytes);
		fs_add(&f->payload[dir], held.payload);
		fs_add(&f->ip_bytes[dir], held.ip_bytes);
	}

	/* 4) TCP sequence tracking, history length and state mirror */
	if (p->pflags & FS_PF_TCP) {
		__u8 fl = p->tcp_flags;
#if FS_TCP_SEQ
		if (fs_seq_step(f, dir, p))
			reason |= FS_EVR_SEQ;
		reason = fs_opaque(reason);
#endif
		__u8 st = f->state;
		__u8 hl = f->hist_len;
		if (fl & (FS_TH_SYN | FS_TH_FIN | FS_TH_RST))
			reason |= FS_EVR_CTRL;
		if (p->payload_len && hl < FS_HISTORY_MAX)
			reason |= FS_EVR_DATA;
		/* Fast path: a pure ACK / data packet outside the two ACK-sensitive states can
		 * neither add a letter nor change the state. */
		if (reason || st == FS_ST_SYN_RECEIVED || st == FS_ST_CLOSING_TCP) {
			__u32 nl = hl + fs_letters(fl, p->payload_len);
			if (nl > FS_HISTORY_MAX)
				nl = FS_HISTORY_MAX;
			if (nl != hl)
				f->hist_len = nl;
			__u8 side = dir != f->first_dir;
			__u8 fs = f->fin_side;
			__u8 ns = fs_tcp_step(st, side, fl, &fs);
			if (ns != st) {
				f->state = ns;
				f->fin_side = fs;
				reason |= FS_EVR_STATE;
			}
		}
	}
#if FS_PACKET_EVENTS > 0
	if (((f->pkts[0] + f->pkts[1]) % FS_PACKET_EVENTS) == 0)
		reason |= FS_EVR_SAMPLE;
#endif
#if FS_DNS
	/* 4c) dns: a message to or from port 53 that can hold a header (TCP: after its length) */
	if ((p->pflags & FS_PF_PORTS) && (p->sport == FS_DNS_PORT || p->dport == FS_DNS_PORT) &&
	    p->payload_len >= ((p->pflags & FS_PF_TCP) ? 14 : 12))
		reason |= FS_EVR_DNS;
#endif

	/* 5) time stamp and event */
	if (reason) {
		reason = fs_opaque(reason);
		if (!now)
			now = bpf_ktime_get_ns();
		f->last_ns = now;
		/* the precise time stands for the rest of the tick */
		f->last_jif = bpf_jiffies64();
		f->events += 1;
		int lost = fs_emit(ctx, is_xdp, &k, f, p, now, frame_len, ifindex, hook, dir,
		                   reason, parent) < 0;
		/* ev_lost: userspace has not seen the flow's terminal state; such an entry keeps
		 * counting (see 3) until an event with the terminal state gets through, or the
		 * next map sync ends it. */
		if (f->state >= FS_ST_CLOSED && f->ev_lost != lost)
			f->ev_lost = lost;
	} else {
		fs_last_seen(f);
	}
}

#if FS_DECAP
/* Tail-call program idx of fs_*_progs; returning means the call failed (FS_CNT_TUN_LOST). */
static __always_inline void fs_tun_call(void *ctx, int is_xdp, __u32 idx)
{
	if (is_xdp)
		fs_xdp_progs.call(ctx, idx);
	else
		fs_tc_progs.call(ctx, idx);
	fs_count(FS_CNT_TUN_LOST, 1);
}

/* The outer program's body: counts fs_tun_state.pkt, a tunnel candidate the entry point
 * parsed, as the entry point counts any packet, then looks inside it. */
static __always_inline void fs_outer(void *ctx, int is_xdp)
{
	__u32 slot = is_xdp ? 0 : 1;
	struct fs_tun_st *st = fs_tun_state.lookup(&slot);
	if (!st)
		return;
	fs_account(ctx, is_xdp, &st->pkt, st->frame_len, st->ifindex, st->hook,
	           (const struct fs_flow_key *)0);
	fs_tun_call(ctx, is_xdp, FS_PROG_DECAP);
}

/*
 * The decapsulation program's body: opens the encapsulation of fs_tun_state.pkt (the packet
 * the previous program counted), parses what it carries into .inner and tail-calls the
 * program that counts it. Nothing happens when pkt carries no tunnel.
 */
static __always_inline void fs_decap(void *ctx, int is_xdp, void *data, void *data_end)
{
	__u32 slot = is_xdp ? 0 : 1;
	struct fs_tun_st *st = fs_tun_state.lookup(&slot);
	if (!st)
		return;
	__u8 kind = FS_TK_NONE, ttype = 0;
	__u32 key = 0;
	__s64 end = data_end - data;
	__s64 q = fs_tunnel(data, data_end, &st->pkt, end, st->pkt.tun_type, &kind, &ttype, &key);
	if (q < 0 || q > FS_TUN_OFF_MAX)
		return;
	__u8 depth = st->pkt.tun_depth + 1;
	fs_key_of(&st->pkt, &st->parent);
	__builtin_memset(&st->inner, 0, sizeof(st->inner));
	if (fs_tun_inner(data, data_end, q, kind, end, &st->inner) < 0)
		return;
	st->inner.tun_type = ttype;
	st->inner.tun_key = key;
	st->inner.tun_depth = depth;
	st->inner.tun_off = q;
	fs_tun_call(ctx, is_xdp, FS_PROG_INNER);
}

/*
 * The inner program's body: counts fs_tun_state.inner in its flow, linked to the flow of
 * .pkt, then, up to FS_TUN_MAX_DEPTH, looks for a tunnel inside it in turn.
 */
static __always_inline void fs_inner(void *ctx, int is_xdp)
{
	__u32 slot = is_xdp ? 0 : 1;
	struct fs_tun_st *st = fs_tun_state.lookup(&slot);
	if (!st)
		return;
	/* packet and parent stay in the map value: the stack has no room beside fs_account's */
	struct fs_pkt *p = &st->inner;
	__u32 flen = st->frame_len;
	__u32 len = flen > p->tun_off ? flen - p->tun_off : 0;
	fs_count(FS_CNT_DECAP, 1);
	fs_account(ctx, is_xdp, p, len, st->ifindex, st->hook, &st->parent);
	if (p->tun_depth >= FS_TUN_MAX_DEPTH || !fs_tun_candidate(p))
		return;
	__builtin_memcpy(&st->pkt, p, sizeof(*p));
	fs_tun_call(ctx, is_xdp, FS_PROG_DECAP);
}
#endif

/*
 * A VLAN tag the stack keeps out of the frame (TC: skb metadata, FS_HW_VLAN | id; on ingress
 * the stack moves the outer tag there before TC runs, on egress a VLAN device puts it there
 * for a driver that inserts it) was the frame's outermost: it goes in front of the tags the
 * parser found, as a capture shows it (libpcap inserts it again).
 */
static __always_inline void fs_hw_vlan(struct fs_pkt *p, __u32 hw_vlan)
{
	if (hw_vlan) {
		p->vlan[1] = p->vlan[0];
		p->vlan[0] = hw_vlan & 0xFFF;
		p->nvlan++;
	}
}

static __always_inline void fs_process(void *ctx, int is_xdp, void *data, void *data_end,
                                       __u32 frame_len, __u32 ifindex, __u8 hook, __u32 hw_vlan)
{
	fs_count(FS_CNT_PACKETS, 1);
#if FS_DECAP
	/*
	 * tunnels: the packet is parsed into the per-CPU fs_tun_state (not the stack), so that a
	 * tunnel candidate can go on in fs_*_outer (tail call), which counts it as below and then
	 * looks inside it. When the call fails, the packet is counted here and its payload not
	 * looked at (FS_CNT_TUN_LOST). The verifier knows nothing of map memory: it walks
	 * fs_account once, not once per way through the parser.
	 */
	__u32 slot = is_xdp ? 0 : 1;
	struct fs_tun_st *st = fs_tun_state.lookup(&slot);
	if (!st) /* cannot happen (array index 0 or 1) */
		return;
	struct fs_pkt *p = &st->pkt;
	__builtin_memset(p, 0, sizeof(*p));
	int err = parse_frame(data, data_end, p);
	if (err < 0) {
		fs_count(fs_perr_counter(err), 1);
		return;
	}
	fs_hw_vlan(p, hw_vlan);
	if (fs_tun_candidate(p) &&
	    (p->proto != IPPROTO_UDP || fs_tun_udp_candidate(p, data, data_end))) {
		st->frame_len = frame_len;
		st->ifindex = ifindex;
		st->hook = hook;
		fs_tun_call(ctx, is_xdp, FS_PROG_OUTER);
	}
	fs_account(ctx, is_xdp, p, frame_len, ifindex, hook, (const struct fs_flow_key *)0);
#else
	struct fs_pkt p = {};
	int err = parse_frame(data, data_end, &p);
	if (err < 0) {
		fs_count(fs_perr_counter(err), 1);
		return;
	}
	fs_hw_vlan(&p, hw_vlan);
	fs_account(ctx, is_xdp, &p, frame_len, ifindex, hook, (const struct fs_flow_key *)0);
#endif
}

#endif /* FS_FLOW_H */

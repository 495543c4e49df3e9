/* SPDX-License-Identifier: MIT */
/*
 * fs_shared.h - the kernel <-> userspace contract of flowscope's live sensor.
 *
 * Every struct and constant that crosses the boundary lives here and nowhere else; the Python
 * mirror is flowscope/sensor/layout.py and tests/test_bpf_layout.py parses this file to check
 * it. Rules: fixed-width types only, every padding byte spelled out (no implicit holes, so C
 * and numpy agree without relying on either side's alignment rules), no maps, no code.
 *
 * Byte order: every multi-byte field is in HOST order (little-endian on the machines we run
 * on). Addresses are converted once in the kernel: bytes 0..7 of the address read as a
 * big-endian integer go to *_hi, bytes 8..15 to *_lo, exactly as flowscope/layout.py stores
 * addresses; an IPv4 address has hi = 0 and lo = the 32-bit address (so 10.0.0.1 is
 * lo = 0x0a000001). Integer comparison of (hi, lo) therefore orders address bytes.
 */
#ifndef FS_SHARED_H
#define FS_SHARED_H

/* Size checks in the loader compare these with what the compiler produced. */
#define FS_ABI_VERSION 4

/* fs_flow_key.l3 */
enum fs_l3 {
	FS_L3_IPV4 = 4,
	FS_L3_IPV6 = 6,
};

/* Orientation of a packet relative to its key: FWD when src->dst is the key's a->b. Arrays
 * indexed by orientation ([2]) use these indices. */
enum fs_dir {
	FS_DIR_FWD = 0,
	FS_DIR_REV = 1,
};

/* Hook that saw a packet (fs_event.hook). */
enum fs_hook {
	FS_HOOK_XDP = 0, /* ingress */
	FS_HOOK_TC = 1,  /* egress */
};

/* TCP flag bits as on the wire (byte 13 of the TCP header). */
enum fs_tcp_flag {
	FS_TH_FIN = 0x01,
	FS_TH_SYN = 0x02,
	FS_TH_RST = 0x04,
	FS_TH_PSH = 0x08,
	FS_TH_ACK = 0x10,
	FS_TH_URG = 0x20,
	FS_TH_ECE = 0x40,
	FS_TH_CWR = 0x80,
};

/* Kernel mirror of the TCP state machine (spec/semantics.md); same codes as ST_* in
 * flowscope/layout.py. Only used to decide which pure ACKs userspace must see. */
enum fs_tcp_state {
	FS_ST_ACTIVE = 0,
	FS_ST_SYN_SENT = 1,
	FS_ST_SYN_RECEIVED = 2,
	FS_ST_ESTABLISHED = 3,
	FS_ST_FIN_WAIT = 4,
	FS_ST_CLOSING_TCP = 5,
	FS_ST_CLOSED = 6,
	FS_ST_RESET = 7,
};

/* History letters a flow can hold (semantics.md "History"). */
#define FS_HISTORY_MAX 16

/* dns: bytes of a port-53 packet's L4 payload a FS_EVR_DNS record carries (fs_dns_event.dns):
 * the 12-byte header, the longest question name (255) and QTYPE/QCLASS, after TCP's 2-byte
 * length, rounded up to 8. Userspace decodes them with the offline DNS parser. */
#define FS_DNS_BYTES 296

/* fs_event.pflags: what the parser found in this packet. */
enum fs_pkt_flag {
	FS_PF_PORTS = 0x01,      /* ports come from a TCP/UDP/SCTP header */
	FS_PF_TCP = 0x02,        /* tcp_flags/seq/ack/window are valid */
	FS_PF_FRAG = 0x04,       /* non-first IP fragment: ports from the fragment map (fs_frags), 0
			     * when its datagram's first fragment is unknown */
	FS_PF_MORE_FRAGS = 0x10, /* first fragment (offset 0) with more fragments to follow */
	FS_PF_ICMP = 0x20,       /* icmp_type/icmp_code are valid */
};

/* tunnels: fs_event.tun_type, the encapsulation a decapsulated packet came out of; same
 * values as layout.TUN_* (docs/tunnels.md). */
enum fs_tun_type {
	FS_TUN_IP = 1, /* IP in IP: 4in4, 6in4, 4in6, 6in6 */
	FS_TUN_GRE = 2,
	FS_TUN_VXLAN = 3,
	FS_TUN_GENEVE = 4,
	FS_TUN_GTPV1 = 5,
	FS_TUN_TEREDO = 6,
	FS_TUN_AYIYA = 7,
};

/* fs_event.reason: why this packet was sent to userspace (bits; several may be set). */
enum fs_event_reason {
	FS_EVR_NEW = 0x01,    /* first packet of the flow (entry created, or a terminal flow
				 * restarted: fs_event.gen then differs from the previous one) */
	FS_EVR_CTRL = 0x02,   /* TCP SYN, FIN or RST */
	FS_EVR_DATA = 0x04,   /* TCP payload while the history had room for its 'D' */
	FS_EVR_STATE = 0x08,  /* the kernel's state mirror changed state (covers the pure ACKs
				 * of SynReceived->Established and ClosingTcp->Closed) */
	FS_EVR_SAMPLE = 0x10, /* FS_PACKET_EVENTS: every Nth packet */
	FS_EVR_ZEEK = 0x20,   /* a packet the Zeek-style state needs (FS_DB_* below): the first
				 * packet of a direction, the first pure ACK and the first data
				 * segment of a direction, any packet once both directions sent
				 * FIN or RST, a packet whose encapsulation (fs_flow.tun_parent)
				 * differs from the flow's previous packet's */
	FS_EVR_SEQ = 0x40,    /* tcpperf: a direction's retransmission + out-of-order count or
				 * its zero-window count reached 1, 10, 100, ... (Zeek's T and W
				 * letters) */
	/* dns */
	FS_EVR_DNS = 0x80, /* a UDP or TCP packet to or from port 53 with a payload that can hold
			    * a DNS header: the record is a struct fs_dns_event */
};

/* fs_flow.seq_flags / fs_event.seq_flags (tcpperf): per orientation, FWD bit << 0, REV << 1. */
enum fs_seq_flag {
	FS_SQ_INIT_FWD = 0x01, /* the orientation sent a TCP packet: its numbers are set */
	FS_SQ_INIT_REV = 0x02,
	FS_SQ_FIN_FWD = 0x04, /* the orientation sent a FIN */
	FS_SQ_FIN_REV = 0x08,
	FS_SQ_HOLE_FWD = 0x10, /* hole_lo/hole_hi hold a sequence hole (kernel only) */
	FS_SQ_HOLE_REV = 0x20,
};

/* fs_flow.dir_bits[dir]: what a direction has already sent (drives FS_EVR_ZEEK). */
enum fs_dir_bit {
	FS_DB_SEEN = 0x01,  /* a packet */
	FS_DB_ACK = 0x02,   /* a TCP pure ACK: ACK, no SYN/FIN/RST, no payload */
	FS_DB_DATA = 0x04,  /* a TCP data segment without SYN/FIN/RST */
	FS_DB_CLOSE = 0x08, /* a TCP FIN or RST */
};

/* Indices of the per-CPU counters array (fs_counters). Userspace sums over CPUs. */
enum fs_counter {
	FS_CNT_PACKETS = 0,       /* every packet either program saw (matched = PACKETS - TRUNCATED
				 * - NOT_IP - BAD_HEADER - MAP_FULL; not counted per packet to keep
				 * the hot path at one counter) */
	FS_CNT_TRUNCATED = 1,     /* frame ends inside a header (unmatched) */
	FS_CNT_NOT_IP = 2,        /* no IPv4/IPv6 inside (ARP, LLDP, ...) (unmatched) */
	FS_CNT_BAD_HEADER = 3,    /* impossible header field: IP version mismatch, IHL < 5, TCP data
				 * offset < 5 (unmatched) */
	FS_CNT_MAP_FULL = 4,      /* new flow not inserted: flow map full (packet not counted) */
	FS_CNT_RING_FULL = 5,     /* event lost: ring buffer reserve failed */
	FS_CNT_EVENTS = 6,        /* events submitted */
	FS_CNT_FLOWS_NEW = 7,     /* flow entries created */
	FS_CNT_FLOWS_RESTART = 8, /* terminal (Closed/Reset) entries restarted as a new flow */
	FS_CNT_PULL_FAIL = 9,     /* TC: bpf_skb_pull_data failed (parsed what was linear) */
	FS_CNT_INSERT_RACE = 10,  /* insert lost to another CPU; the packet used its entry */
	FS_CNT_TRUNCATED_L4 = 11, /* TCP/UDP header cut short: counted to the IP-level flow
				   * (ports 0) */
	FS_CNT_FRAG_KEYED = 12,   /* non-first fragments counted to their datagram's flow (held
				 * ones included once their first fragment came) */
	FS_CNT_FRAG_HELD = 13,    /* non-first fragments held for their first fragment (not
				 * counted to a flow yet) */
	FS_CNT_FRAG_RESOLVED = 14, /* held fragments added to their datagram's flow */
	FS_CNT_FRAG_ORPHANED = 15, /* held fragments given up after FS_FRAG_TIMEOUT_NS (held -
				    * resolved - orphaned are still held or were evicted) */
	/* tunnels */
	FS_CNT_DECAP = 16,    /* decapsulated packets counted to their inner flow (not in
			       * PACKETS: a tunnel frame is one packet there) */
	FS_CNT_TUN_LOST = 17, /* a tunnel frame's inner packet not counted: the tail call to
			       * the decapsulation program failed */
	/* dns and drops */
	FS_CNT_DNS = 24,         /* FS_EVR_DNS records submitted */
	FS_CNT_DROPS = 25,       /* kernel drops (skb:kfree_skb) counted to a flow of the map */
	FS_CNT_DROPS_OTHER = 26, /* kernel drops of watched interfaces matching no flow */
	FS_CNT_OTHERHOST = 27,   /* frames the stack freed as addressed to another host
				  * (OTHERHOST: a mirror port, a promiscuous link; host-wide),
				  * which the drop tracer skips */
	/* flow filter and sampling */
	FS_CNT_FILTERED = 28,    /* packets of new flows the filter dropped (no entry made; held
				  * fragments a dropped first fragment resolved included) */
	FS_CNT_SAMPLED_OUT = 29, /* packets of new flows the sampler left out (no entry made) */
	FS_CNT_MAX = 30,
};

/*
 * Flow key: canonical bidirectional 5-tuple, 40 bytes. (a_hi, a_lo, port_a) <= (b_hi, b_lo,
 * port_b) compared as integers in that order, so both directions of a conversation share one
 * key. Non-first IP fragments and every protocol without ports (ICMP, ICMPv6, ...) use ports
 * 0. Same words as the userspace key: meta = l3 << 48 | proto << 32 | port_a << 16 | port_b.
 */
struct fs_flow_key {
	__u64 a_hi;   /*  0: address a, bytes 0..7 as big-endian integer (host order) */
	__u64 a_lo;   /*  8: address a, bytes 8..15 (IPv4: the address) */
	__u64 b_hi;   /* 16: address b */
	__u64 b_lo;   /* 24 */
	__u16 port_a; /* 32: host order */
	__u16 port_b; /* 34: host order */
	__u8 l3;      /* 36: enum fs_l3 */
	__u8 proto;   /* 37: IP protocol (IPv6: after extension headers) */
	__u16 vlan;   /* 38: the outer VLAN id with FS_KEY_VLAN (key_vlan), else 0; host order */
};

/*
 * Flow map value, 232 bytes. Counters are indexed by orientation (enum fs_dir), not by side:
 * the initiator is the orientation first_dir. Counters are updated with atomic adds; the
 * remaining fields are written without locks (a race between two CPUs on one flow can at worst
 * mis-order two state steps, which the counters in every event let userspace notice).
 */
struct fs_flow {
	__u64 first_ns;    /*   0: bpf_ktime_get_ns() of the first packet (CLOCK_MONOTONIC) */
	__u64 last_ns;     /*   8: time of the latest packet; see FS_PRECISE_LAST_SEEN */
	__u64 pkts[2];     /*  16: packets per orientation */
	__u64 bytes[2];    /*  32: frame bytes per orientation (whole L2 frame) */
	__u64 payload[2];  /*  48: L4 payload bytes per orientation (by the IP length fields) */
	__u64 ip_bytes[2]; /*  64: IP total-length bytes per orientation */
	__u64 events;      /*  80: events submitted for this flow */
	__u32 gen;         /*  88: generation: +1 each time a terminal entry restarts */
	__u8 tcp_flags[2]; /*  92: OR of TCP flags per orientation, every packet */
	__u8 first_dir;    /*  94: orientation of the first packet = the initiator */
	__u8 state;        /*  95: enum fs_tcp_state (kernel mirror) */
	__u8 hist_len;     /*  96: history letters so far, saturates at FS_HISTORY_MAX */
	__u8 fin_side;    /*  97: side (0 initiator, 1 responder) of the FIN that entered FinWait */
	__u8 dir_bits[2]; /*  98: FS_DB_* per orientation */
	__u8 ev_lost;     /* 100: 1 when the event that made the state terminal was lost (ring
			    * full): the entry keeps counting instead of restarting, and the
			    * next map sync ends the flow with what the kernel counted */
	__u8 _pad[3];     /* 101 */
	/* drops: packets of this flow the kernel dropped (skb:kfree_skb), per orientation, and
	 * the majority drop reason (Boyer-Moore vote: the most frequent one whenever one reason
	 * makes up more than half of the drops) */
	__u32 drops[2];    /* 104 */
	__u16 drop_reason; /* 112: enum skb_drop_reason of the running vote */
	__u16 drop_votes;  /* 114: the vote's counter */
	__u8 _pad2[12];    /* 116 */
	/* tcpperf: per-orientation TCP sequence tracking, the rules of
	 * flowscope/_kernels/tcpseq.py (host order) */
	__u32 seq_start[2]; /* 128: Zeek's start_seq */
	__u32 seq_high[2];  /* 136: highest sequence end (Zeek's last_seq) */
	__u32 seq_acked[2]; /* 144: highest ack the other orientation sent (Zeek's ack_seq) */
	__u32 hole_lo[2];   /* 152: the latest sequence hole [lo, hi) (FS_SQ_HOLE_*) */
	__u32 hole_hi[2];   /* 160 */
	__u32 rtx_pkts[2];  /* 168: retransmitted segments */
	__u32 ooo_pkts[2];  /* 176: out-of-order segments (filling the hole) */
	__u32 zero_win[2];  /* 184: zero-window advertisements */
	__u64 rtx_bytes[2]; /* 192: retransmitted payload bytes */
	__u8 seq_flags;     /* 208: FS_SQ_* */
	__u8 _pad_seq[7];   /* 209 */
	/* last-seen tick: bpf_jiffies64() when last_ns was last stored (with FS_PRECISE_LAST_SEEN
	 * 0 a packet in the same jiffy leaves last_ns as it is) */
	__u64 last_jif; /* 216 */
	/* tunnels: the encapsulation of the flow's latest packet, fs_tun_parent_id() of the
	 * key of the flow around it (0: not encapsulated); a change sends an event */
	__u64 tun_parent; /* 224 */
};

/*
 * Ring buffer record, 344 bytes: one control event (see FS_EVR_*). Counters are the flow's
 * values right after this packet was counted, so userspace keeps exact per-flow statistics
 * without per-packet records.
 */
struct fs_event {
	struct fs_flow_key key; /*   0 */
	__u64 ts_ns;            /*  40: bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 first_ns;         /*  48: the flow's first packet */
	__u64 pkts[2];          /*  56: flow packets per orientation, this packet included */
	__u64 bytes[2];         /*  72: flow frame bytes per orientation */
	__u64 payload[2];       /*  88: flow L4 payload bytes per orientation */
	__u64 ip_bytes[2];      /* 104: flow IP total-length bytes per orientation */
	__u32 seq;              /* 120: TCP, host order */
	__u32 ack;              /* 124: TCP, host order */
	__u32 frame_len;        /* 128: this frame (XDP: data_end - data, TC: skb->len) */
	__u32 payload_len;      /* 132: this packet's L4 payload bytes */
	__u32 gen;              /* 136: fs_flow.gen of the flow */
	__u32 ifindex;          /* 140: interface the packet was seen on */
	__u32 ip_len;           /* 144: this packet's IP total length */
	__u16 window;           /* 148: TCP, host order */
	__u8 dir;               /* 150: enum fs_dir of this packet */
	__u8 tcp_flags;         /* 151: this packet's TCP flags */
	__u8 reason;            /* 152: FS_EVR_* bits */
	__u8 first_dir;         /* 153: initiator orientation */
	__u8 state;             /* 154: kernel mirror state after this packet */
	__u8 hist_len;          /* 155: history letters after this packet */
	__u8 hook;              /* 156: enum fs_hook */
	__u8 pflags;            /* 157: FS_PF_* */
	__u8 icmp_type;         /* 158: valid with FS_PF_ICMP */
	__u8 icmp_code;         /* 159 */
	__u8 flags_or[2]; /* 160: the flow's TCP flags per orientation, this packet included */
	__u8 _pad[22];    /* 162: zero */
	/* tcpperf: the flow's sequence tracking after this packet (fs_flow's fields) */
	__u32 seq_start[2]; /* 184 */
	__u32 seq_high[2];  /* 192 */
	__u32 seq_acked[2]; /* 200 */
	__u32 rtx_pkts[2];  /* 208 */
	__u32 ooo_pkts[2];  /* 216 */
	__u32 zero_win[2];  /* 224 */
	__u64 rtx_bytes[2]; /* 232 */
	__u8 seq_flags;     /* 248: FS_SQ_* */
	__u8 _pad_seq[7];   /* 249: zero */
	/* context: the link layer of this packet */
	__u64 smac;    /* 256: source MAC, 48-bit big-endian value in host order */
	__u64 dmac;    /* 264: destination MAC */
	__u16 vlan[2]; /* 272: the first two VLAN ids, outer first (nvlan of them valid) */
	__u8 nvlan;    /* 276: VLAN tags of the frame */
	__u8 _pad3[3]; /* 277: zero */
	/* drops: the flow's kernel drops so far (fs_flow.drops, drop_reason) */
	__u32 drops[2];    /* 280 */
	__u16 drop_reason; /* 288 */
	__u8 _pad2[6];     /* 290: zero */
	/* tunnels: a decapsulated packet (tun_depth >= 1) and the flow that carried it */
	struct fs_flow_key tun_parent; /* 296: key of the flow around this packet (zero at
					* depth 0) */
	__u32 tun_key;                 /* 336: VXLAN/Geneve VNI, GRE key, GTP TEID */
	__u8 tun_type;                 /* 340: layout.TUN_* of the encapsulation */
	__u8 tun_depth;                /* 341: 0: the frame's outer packet; n: n inside */
	__u8 tun_ether;                /* 342: 1: the encapsulated frame has an Ethernet or
					* 802.11 header (smac, dmac, vlan are its own) */
	__u8 _pad_tun;                 /* 343: zero */
};

/*
 * dns: a ring record with FS_EVR_DNS set, 648 bytes: the event, then the first bytes of the
 * packet's L4 payload (UDP: the DNS message; TCP: its 2-byte length, then the message).
 * Other records are a bare struct fs_event; the record length tells them apart.
 */
struct fs_dns_event {
	struct fs_event ev; /*   0 */
	__u16 dns_len;      /* 344: bytes of dns[] copied (min(payload, frame, FS_DNS_BYTES)) */
	__u8 _pad[6];       /* 346: zero */
	__u8 dns[296];      /* 352: FS_DNS_BYTES; bytes after dns_len are zero */
};

/*
 * drops: key of fs_drop_counts (kernel drops by interface and reason), 8 bytes. ifindex is the
 * dropping skb's device when the sensor watches it, else 0 (a drop of a known flow's packet
 * on another device, e.g. in another network namespace).
 */
struct fs_drop_key {
	__u32 ifindex; /* 0: not a watched interface */
	__u32 reason;  /* enum skb_drop_reason of the running kernel */
};

/* Flow filter and sampling. FS_FILTER (a -D flag) holds the fs_filter_bit bits of the lists
 * in force; same values as layout.FLT_* in flowscope/layout.py. */
enum fs_filter_bit {
	FS_FLT_INC_CIDRS = 0x01,  /* keep only flows with an address in fs_flt_cidr_in */
	FS_FLT_EXC_CIDRS = 0x02,  /* drop flows with an address in fs_flt_cidr_ex */
	FS_FLT_INC_PORTS = 0x04,  /* keep only flows with a port marked FS_FLT_IN */
	FS_FLT_EXC_PORTS = 0x08,  /* drop flows with a port marked FS_FLT_EX */
	FS_FLT_INC_PROTOS = 0x10, /* keep only flows whose protocol is marked FS_FLT_IN */
	FS_FLT_EXC_PROTOS = 0x20, /* drop flows whose protocol is marked FS_FLT_EX */
};

/* Values of the fs_flt_ports / fs_flt_protos arrays (bits). */
enum fs_filter_mark {
	FS_FLT_IN = 0x01, /* on the include list */
	FS_FLT_EX = 0x02, /* on the exclude list */
};

/*
 * Key of the CIDR tries (LPM), 24 bytes. The trie matches prefixlen bits of the bytes after
 * prefixlen: l3 (8 bits) then the address in network order (IPv4 in addr[0..3]), so a /24
 * IPv4 network has prefixlen 8 + 24 and one trie holds both families.
 */
struct fs_cidr_key {
	__u32 prefixlen; /*  0: host order */
	__u8 l3;         /*  4: enum fs_l3 */
	__u8 addr[16];   /*  5: network order */
	__u8 _pad[3];    /* 21: zero */
};

/* The flow sampler's hash (fs_sample_hash in fs_flow.h; layout.HASH_M1, HASH_M2, SAMPLE_SEED):
 * a flow is kept when fs_sample_hash(key) % FS_SAMPLE_RATE == 0. */
#define FS_HASH_M1 0xBF58476D1CE4E5B9
#define FS_HASH_M2 0x94D049BB133111EB
#define FS_SAMPLE_SEED 0x5851F42D4C957F2D

/* Where fs_flow_key.vlan goes in the engine's metadata word (layout.META_VLAN_*_SHIFT): its
 * low 8 bits at bit 40, its high 4 bits at bit 60. */
#define FS_META_VLAN_LO_SHIFT 40
#define FS_META_VLAN_HI_SHIFT 60

#endif /* FS_SHARED_H */

/* SPDX-License-Identifier: MIT */
/*
 * fs_maps.h - every map of the live sensor (BCC map macros), shared by the XDP and TC programs,
 * which are compiled in one module so they use the same map instances.
 */
#ifndef FS_MAPS_H
#define FS_MAPS_H

#include "fs_shared.h"
#include "fs_parse.h"

#ifndef FS_MAX_FLOWS
#define FS_MAX_FLOWS 131072 /* flow entries; a full map drops new flows (FS_CNT_MAP_FULL) */
#endif
#ifndef FS_RING_PAGES
#define FS_RING_PAGES 1024 /* ring buffer size in pages (power of two): 4 MiB = ~29 k events */
#endif

/* Key: struct fs_flow_key (canonical 5-tuple). Value: struct fs_flow (counters, TCP mirror).
 * A plain (preallocated) hash: userspace ages flows out with batched lookup-and-delete, which
 * an LRU map would race with by evicting silently. */
BPF_HASH(fs_flows, struct fs_flow_key, struct fs_flow, FS_MAX_FLOWS);

#ifndef FS_MAX_FRAGS
#define FS_MAX_FRAGS 4096 /* fragmented datagrams tracked at once (layout.FRAG_SLOTS) */
#endif

/* Kernel-internal (userspace never reads this map). A fragmented TCP/UDP/SCTP datagram. */
struct fs_frag_key {
	__u64 src_hi, src_lo, dst_hi, dst_lo; /* as fs_flow_key, in the datagram's direction */
	__u32 id;                             /* IPv4 identification / IPv6 fragment id */
	__u8 l3, proto, _pad[2];
};
struct fs_frag {
	__u64 first_ns;     /* the datagram's first-seen fragment */
	__u64 pkts;         /* held fragments (no first fragment yet): packets */
	__u64 bytes;        /* ... frame bytes */
	__u64 payload;      /* ... L4 bytes */
	__u64 ip_bytes;     /* ... IP total-length bytes */
	__u16 sport, dport; /* the first fragment's ports (host order), with has_ports */
	__u8 has_ports;     /* 1: the first fragment came */
	__u8 _pad[3];
};

/* Key: struct fs_frag_key. Value: struct fs_frag (ports of the datagram, or the counts of its
 * fragments seen before the first one). LRU, as the kernel's own IP defragmentation bounds its
 * queues: the oldest datagrams make room; their held fragments are lost (see the counters). */
BPF_TABLE("lru_hash", struct fs_frag_key, struct fs_frag, fs_frags, FS_MAX_FRAGS);

#ifndef FS_FLT_CIDRS_MAX
#define FS_FLT_CIDRS_MAX 1024 /* networks per CIDR list of the flow filter */
#endif

/* Flow filter (read only by the programs; userspace fills them before attaching).
 * Key: struct fs_cidr_key. Value: __u8, 1 (present). One trie per list. */
BPF_LPM_TRIE(fs_flt_cidr_in, struct fs_cidr_key, __u8, FS_FLT_CIDRS_MAX);
BPF_LPM_TRIE(fs_flt_cidr_ex, struct fs_cidr_key, __u8, FS_FLT_CIDRS_MAX);
/* Key: port (host order). Value: __u8, enum fs_filter_mark bits. */
BPF_ARRAY(fs_flt_ports, __u8, 65536);
/* Key: IP protocol number. Value: __u8, enum fs_filter_mark bits. */
BPF_ARRAY(fs_flt_protos, __u8, 256);

/* Key: none. Value: struct fs_event records (control events only, see fs_flow.h). */
BPF_RINGBUF_OUTPUT(fs_events, FS_RING_PAGES);

/* Kernel-internal. Key: 0. Value: the struct fs_flow a new flow is built in before its
 * insert (per CPU: too large for the 512-byte BPF stack beside the parsed packet). */
BPF_PERCPU_ARRAY(fs_scratch, struct fs_flow, 1);
/* One slot per CPU that fs_opaque() passes a value through, so that the verifier sees an
 * unknown value instead of one of its many known ones (see fs_opaque in fs_flow.h). */
BPF_PERCPU_ARRAY(fs_opaque_slot, __u64, 1);

/* Key: enum fs_counter. Value: __u64 per CPU (userspace sums the CPUs). */
BPF_PERCPU_ARRAY(fs_counters, __u64, FS_CNT_MAX);

/* drops. Key: ifindex of an interface the sensor is attached to. Value: 1 (filled by
 * userspace; drops on these devices count even when their packet matches no flow). */
BPF_HASH(fs_watched, __u32, __u8, 256);

/* drops. Key: struct fs_drop_key. Value: __u64 drops (atomic adds). */
BPF_HASH(fs_drop_counts, struct fs_drop_key, __u64, 4096);

/* tunnels */
#ifndef FS_DECAP
#define FS_DECAP 1 /* 1: decapsulate tunnels (fs_tunnel.h; the decapsulate setting) */
#endif
#if FS_DECAP
/* Key: FS_PROG_*. Value: the program a tunnel frame's walk tail-calls
 * next (filled by the loader); one array per program type, as the kernel requires. */
BPF_PROG_ARRAY(fs_xdp_progs, 3);
BPF_PROG_ARRAY(fs_tc_progs, 3);
#define FS_PROG_OUTER 0 /* fs_*_outer: counts a tunnel candidate, the packet in pkt */
#define FS_PROG_DECAP 1 /* fs_*_decap: opens the next encapsulation of the packet in pkt */
#define FS_PROG_INNER 2 /* fs_*_inner: counts the decapsulated packet in inner */
struct fs_tun_st {
	struct fs_pkt pkt;         /* the packet whose payload is looked at for a tunnel */
	struct fs_pkt inner;       /* the packet decapsulated from it */
	struct fs_flow_key parent; /* the key of pkt's flow: inner's parent */
	__u32 frame_len;           /* the whole frame, as the entry point counted it */
	__u32 ifindex;
	__u8 hook;
	__u8 _pad[3];
};
/* Kernel-internal. Key: 0 (XDP), 1 (TC). Value: struct fs_tun_st, what one program of a
 * tunnel frame's walk hands the next (per CPU: a walk runs on one CPU, start to end). */
BPF_PERCPU_ARRAY(fs_tun_state, struct fs_tun_st, 2);
#endif

#endif /* FS_MAPS_H */

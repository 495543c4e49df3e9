/* SPDX-License-Identifier: MIT */
/*
 * fs_maps.h - every map of the live sensor (BCC map macros), shared by the XDP and TC programs,
 * which are compiled in one module so they use the same map instances.
 */
#ifndef FS_MAPS_H
#define FS_MAPS_H

#include "fs_shared.h"

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

/* Key: none. Value: struct fs_event records (control events only, see fs_flow.h). */
BPF_RINGBUF_OUTPUT(fs_events, FS_RING_PAGES);

/* Key: enum fs_counter. Value: __u64 per CPU (userspace sums the CPUs). */
BPF_PERCPU_ARRAY(fs_counters, __u64, FS_CNT_MAX);

#endif /* FS_MAPS_H */

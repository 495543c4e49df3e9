/* SPDX-License-Identifier: MIT */
/*
 * fs_tc.c - TC entry points (tcx or clsact): fs_tc on egress, fs_tc_ingress on ingress (for
 * interfaces whose XDP hook another program holds). Each counts the packet into its flow and
 * hands it on to the next program of the chain. The frame length is skb->len, the whole L2
 * frame (on ingress the MAC header is pushed back before TC programs run).
 *
 * Logic: 1) make the headers linear (skbs from AF_PACKET and GSO paths keep only a few bytes in
 * the linear area, so direct packet access would see data_end - data = 14); 2) run the shared
 * body on the linear part, with the VLAN tag the skb holds outside the frame (fs_hw_vlan) and
 * its 4 bytes counted; 3) return TCX_NEXT, never a verdict.
 */
#include <uapi/linux/pkt_cls.h>
#include "fs_flow.h"

#ifndef FS_PULL_BYTES
/* Bytes made linear before parsing: the deepest L2 stack fs_parse.h walks, an IPv4 header
 * with options and a TCP header with options (IPv6 extension headers beyond that are parsed
 * as far as they are linear). */
#define FS_PULL_BYTES (FS_L2_MAX_BYTES + 60 + 60)
#endif

/* TCX_NEXT (linux/bpf.h, kernels >= 6.6) has the value of TC_ACT_UNSPEC: "no verdict, run the
 * next program". TC_ACT_OK would end a tcx chain, so programs attached after ours would never
 * see the packet; on a clsact filter list UNSPEC likewise moves on, and at the end of the list
 * the packet passes. BCC's bundled bpf.h may predate TCX_NEXT, hence the local name. */
#define FS_TC_NEXT TC_ACT_UNSPEC

/* fs_process's hw_vlan: a tag is present (its id in the low 12 bits) */
#define FS_HW_VLAN (1u << 16)

/* fs_event.hook tells ingress from egress; on ingress the TC program reports what the XDP
 * program would, so records do not depend on which hook counted the packet. */
#define FS_HOOK_TC_INGRESS FS_HOOK_XDP

static __always_inline int fs_tc_body(struct __sk_buff *skb, __u8 hook)
{
	__u32 len = skb->len;
	__u32 want = len < FS_PULL_BYTES ? len : FS_PULL_BYTES;

	/* Pull only when needed: the helper may reallocate the head, which costs on every packet. */
	if ((__u32)(skb->data_end - skb->data) < want && bpf_skb_pull_data(skb, want) < 0)
		fs_count(FS_CNT_PULL_FAIL, 1);
	/* Reload the pointers: pulling invalidates them. */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* A tag outside the frame (skb metadata): the frame a capture shows has its 4 bytes. */
	__u32 hw_vlan = skb->vlan_present ? FS_HW_VLAN | (skb->vlan_tci & 0xFFF) : 0;
	/* skb->len read again (same value): the copy above carries the range of whichever
	 * branch ran, and the verifier would check everything below once per range. */
	fs_process(skb, 0, data, data_end, skb->len + (hw_vlan ? 4 : 0), skb->ifindex, hook,
	           hw_vlan);
	return FS_TC_NEXT;
}

int fs_tc(struct __sk_buff *skb)
{
	return fs_tc_body(skb, FS_HOOK_TC);
}

int fs_tc_ingress(struct __sk_buff *skb)
{
	return fs_tc_body(skb, FS_HOOK_TC_INGRESS);
}

#if FS_DECAP
#ifndef FS_TUN_PULL_BYTES
/* Bytes made linear before decapsulating: every offset fs_tunnel.h may read, and the inner
 * headers after it. */
#define FS_TUN_PULL_BYTES (FS_TUN_OFF_MAX + 1 + FS_PULL_BYTES)
#endif

/* Decapsulation (tail-called by fs_tc / fs_tc_ingress for a tunnel candidate, see fs_flow.h):
 * only tunnel frames pay for the longer pull. */
int fs_tc_outer(struct __sk_buff *skb)
{
	fs_outer(skb, 0);
	return FS_TC_NEXT;
}

int fs_tc_decap(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 want = len < FS_TUN_PULL_BYTES ? len : FS_TUN_PULL_BYTES;
	if ((__u32)(skb->data_end - skb->data) < want && bpf_skb_pull_data(skb, want) < 0)
		fs_count(FS_CNT_PULL_FAIL, 1);
	fs_decap(skb, 0, (void *)(long)skb->data, (void *)(long)skb->data_end);
	return FS_TC_NEXT;
}

int fs_tc_inner(struct __sk_buff *skb)
{
	fs_inner(skb, 0);
	return FS_TC_NEXT;
}
#endif

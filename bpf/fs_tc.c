/* SPDX-License-Identifier: MIT */
/*
 * fs_tc.c - TC entry point (egress, tcx or clsact): counts the packet into its flow and always
 * lets it go (TC_ACT_OK). The frame length is skb->len, the whole L2 frame.
 *
 * Logic: 1) make the headers linear (skbs from AF_PACKET and GSO paths keep only a few bytes in
 * the linear area, so direct packet access would see data_end - data = 14); 2) run the shared
 * body on the linear part.
 */
#include <uapi/linux/pkt_cls.h>
#include "fs_flow.h"

#ifndef FS_PULL_BYTES
#define FS_PULL_BYTES 256 /* bytes made linear before parsing: all headers fs_parse.h reads */
#endif

int fs_tc(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 want = len < FS_PULL_BYTES ? len : FS_PULL_BYTES;

	/* Pull only when needed: the helper may reallocate the head, which costs on every packet. */
	if ((__u32)(skb->data_end - skb->data) < want && bpf_skb_pull_data(skb, want) < 0)
		fs_count(FS_CNT_PULL_FAIL, 1);
	/* Reload the pointers: pulling invalidates them. */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	fs_process(data, data_end, len, skb->ifindex, FS_HOOK_TC);
	return TC_ACT_OK;
}

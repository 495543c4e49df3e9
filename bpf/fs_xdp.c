/* SPDX-License-Identifier: MIT */
/*
 * fs_xdp.c - XDP entry point (ingress): counts the frame into its flow and always passes it
 * (XDP_PASS: the stack, and any TC program after us, still sees it).
 * The frame length is data_end - data: the whole L2 frame, as the offline path counts it.
 * With FS_DECAP, a tunnel frame goes on through fs_xdp_decap and fs_xdp_inner (tail calls,
 * fs_flow.h), one pair per encapsulation.
 */
#include "fs_flow.h"

int fs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	fs_process(ctx, 1, data, data_end, (__u32)(data_end - data), ctx->ingress_ifindex,
	           FS_HOOK_XDP, 0);
	return XDP_PASS;
}

#if FS_DECAP
int fs_xdp_outer(struct xdp_md *ctx)
{
	fs_outer(ctx, 1);
	return XDP_PASS;
}

int fs_xdp_decap(struct xdp_md *ctx)
{
	fs_decap(ctx, 1, (void *)(long)ctx->data, (void *)(long)ctx->data_end);
	return XDP_PASS;
}

int fs_xdp_inner(struct xdp_md *ctx)
{
	fs_inner(ctx, 1);
	return XDP_PASS;
}
#endif

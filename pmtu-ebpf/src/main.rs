//! pmtu's eBPF programs. Entries only: each calls into a module that does the
//! work and always lets the packet through.
#![no_std]
#![no_main]

mod clamp;
mod maps;
mod observe;
mod packet;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use pmtu_common::event::{HOOK_TC_EGRESS, HOOK_TC_INGRESS, HOOK_XDP};

use crate::packet::{SkbPacket, XdpPacket};

/// Observer at XDP ingress.
#[xdp]
pub fn pmtu_observe_xdp(ctx: XdpContext) -> u32 {
    observe::observe(&XdpPacket(&ctx), ctx.ingress_ifindex() as u32, HOOK_XDP, false);
    xdp_action::XDP_PASS
}

/// Observer at tc ingress.
///
/// Returns TC_ACT_UNSPEC (== TCX_NEXT): the packet continues to the next
/// program on the same hook (tcx_run() in include/net/tcx.h stops at any other
/// verdict, TC_ACT_OK included), so pmtu never hides packets from a clamper or
/// another tool attached after it, and the end of the chain passes it on.
#[classifier]
pub fn pmtu_observe_tc_ingress(ctx: TcContext) -> i32 {
    observe::observe(&SkbPacket(&ctx), packet::skb_ifindex(&ctx), HOOK_TC_INGRESS, false);
    TC_ACT_UNSPEC
}

/// Observer at tc egress: PTBs this host sends or forwards.
#[classifier]
pub fn pmtu_observe_tc_egress(ctx: TcContext) -> i32 {
    observe::observe(&SkbPacket(&ctx), packet::skb_ifindex(&ctx), HOOK_TC_EGRESS, true);
    TC_ACT_UNSPEC
}

/// MSS clamper at tc ingress.
#[classifier]
pub fn pmtu_clamp_tc_ingress(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx);
    TC_ACT_UNSPEC
}

/// MSS clamper at tc egress.
#[classifier]
pub fn pmtu_clamp_tc_egress(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx);
    TC_ACT_UNSPEC
}

/// Does nothing: the floor `cargo xtask bench` measures the others against
/// (BPF_PROG_TEST_RUN's own cost per run). Never attached by pmtu.
#[xdp]
pub fn pmtu_noop_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The tc floor, as above.
#[classifier]
pub fn pmtu_noop_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_ktime_get_ns and the ring-buffer helpers need no more,
// but the kernel refuses some helpers to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

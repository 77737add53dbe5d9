//! pmtu's eBPF programs. Entries only: each calls into a module that does the
//! work and always lets the packet through. pmtu-ebpf/VERIFIER.md lists what
//! the code does for the verifier, with its measured effect.
#![no_std]
#![no_main]

mod clamp;
mod fib;
mod maps;
mod observe;
mod packet;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_ebpf::bindings::TC_ACT_OK;
use pmtu_common::{
    event::{CAPTURE_LINK_ETHERNET, CAPTURE_LINK_L3, HOOK_TC_EGRESS, HOOK_TC_INGRESS, HOOK_XDP},
    parse::Link,
};

use crate::packet::{SkbLoaded, SkbPacket, XdpPacket, skb_link};

// Each tc program comes twice: for Ethernet-framed interfaces and, with the
// suffix `_l3`, for interfaces without a link-layer header (tun, WireGuard,
// PPP, IP tunnels). The loader attaches the one that fits each interface's
// link type, so the layout is a constant in each program and costs nothing
// per packet.

/// Observer at XDP ingress (Ethernet interfaces only).
#[xdp]
pub fn pmtu_observe_xdp(ctx: XdpContext) -> u32 {
    let seen = observe::Seen {
        ctx: ctx.ctx.cast(),
        ifindex: ctx.ingress_ifindex() as u32,
        came_in_on: 0,
        hook: HOOK_XDP,
        link: CAPTURE_LINK_ETHERNET,
    };
    if let Some(pkt) = XdpPacket::new(&ctx) {
        observe::observe(&pkt, &pkt, Link::Ethernet, &seen);
    }
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
    observe_tc(&ctx, false, HOOK_TC_INGRESS)
}

/// Observer at tc ingress, L3 interfaces.
#[classifier]
pub fn pmtu_observe_tc_ingress_l3(ctx: TcContext) -> i32 {
    observe_tc(&ctx, true, HOOK_TC_INGRESS)
}

/// Observer at tc egress: PTBs this host sends or forwards.
#[classifier]
pub fn pmtu_observe_tc_egress(ctx: TcContext) -> i32 {
    observe_tc(&ctx, false, HOOK_TC_EGRESS)
}

/// Observer at tc egress, L3 interfaces.
#[classifier]
pub fn pmtu_observe_tc_egress_l3(ctx: TcContext) -> i32 {
    observe_tc(&ctx, true, HOOK_TC_EGRESS)
}

#[inline(always)]
fn observe_tc(ctx: &TcContext, l3: bool, hook: u8) -> i32 {
    let seen = observe::Seen {
        ctx: ctx.skb.skb.cast(),
        ifindex: packet::skb_ifindex(ctx),
        came_in_on: if hook == HOOK_TC_EGRESS { packet::skb_ingress_ifindex(ctx) } else { 0 },
        hook,
        link: if l3 { CAPTURE_LINK_L3 } else { CAPTURE_LINK_ETHERNET },
    };
    if let Some(pkt) = SkbPacket::new(ctx) {
        observe::observe(&pkt, &SkbLoaded(ctx), skb_link(ctx, l3), &seen);
    }
    TC_ACT_UNSPEC
}

/// MSS clamper at tc ingress.
#[classifier]
pub fn pmtu_clamp_tc_ingress(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx, skb_link(&ctx, false), false);
    TC_ACT_UNSPEC
}

/// MSS clamper at tc egress.
#[classifier]
pub fn pmtu_clamp_tc_egress(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx, skb_link(&ctx, false), true);
    TC_ACT_UNSPEC
}

/// MSS clamper at tc ingress, L3 interfaces.
#[classifier]
pub fn pmtu_clamp_tc_ingress_l3(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx, skb_link(&ctx, true), false);
    TC_ACT_UNSPEC
}

/// MSS clamper at tc egress, L3 interfaces.
#[classifier]
pub fn pmtu_clamp_tc_egress_l3(ctx: TcContext) -> i32 {
    clamp::clamp(&ctx, skb_link(&ctx, true), true);
    TC_ACT_UNSPEC
}

/// Ends the TCX chain with TC_ACT_OK, as many other tools' programs do.
/// Never attached by pmtu: the tests put it in front of pmtu's programs to
/// check that pmtu still runs first.
#[classifier]
pub fn pmtu_pass_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}

/// A feature probe, never attached: returns what bpf_fib_lookup answers
/// for BPF_FIB_LOOKUP_SKIP_NEIGH (-EINVAL on kernels before 6.3, which do
/// not know the flag). The loader runs it with BPF_PROG_TEST_RUN.
#[classifier]
pub fn pmtu_probe_fib(ctx: TcContext) -> i32 {
    let src = [0u8; 16];
    let mut dst = [0u8; 16];
    dst[0] = 127;
    dst[3] = 1;
    let a = fib::lookup(
        ctx.skb.skb.cast::<core::ffi::c_void>(),
        4,
        6,
        &src,
        &dst,
        1,
        0,
        aya_ebpf::bindings::BPF_FIB_LOOKUP_SKIP_NEIGH,
    );
    a.rc as i32
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

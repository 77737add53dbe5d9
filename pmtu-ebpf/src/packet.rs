//! The kernel's side of the one bounds-checked accessor, [`Packet`].
//!
//! Both hooks read through the kernel's load-bytes helpers rather than direct
//! packet pointers: the helper checks bounds itself (also over non-linear skb
//! data, which direct access cannot see), and the offsets the parser computes
//! from IHL and extension-header lengths need no verifier-visible range proofs.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use pmtu_common::parse::Packet;

/// No header pmtu reads lies beyond this offset; anything larger is a bug in
/// the caller's arithmetic, refused rather than truncated into a u32.
const MAX_OFFSET: usize = 0xffff;

pub struct XdpPacket<'a>(pub &'a XdpContext);

impl Packet for XdpPacket<'_> {
    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        if offset > MAX_OFFSET {
            return false;
        }
        // SAFETY: the helper writes at most N bytes into `dst` and reports
        // failure if the frame is shorter.
        let ret = unsafe {
            bpf_xdp_load_bytes(
                self.0.ctx.cast(),
                offset as u32,
                dst.as_mut_ptr().cast::<c_void>(),
                N as u32,
            )
        };
        ret == 0
    }
}

pub struct SkbPacket<'a>(pub &'a TcContext);

impl Packet for SkbPacket<'_> {
    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        if offset > MAX_OFFSET {
            return false;
        }
        // SAFETY: as above, bpf_skb_load_bytes also reads non-linear data.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.skb.skb.cast(),
                offset as u32,
                dst.as_mut_ptr().cast::<c_void>(),
                N as u32,
            )
        };
        ret == 0
    }
}

#[inline(always)]
pub fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` points at the program's __sk_buff context.
    unsafe { (*ctx.skb.skb).ifindex }
}

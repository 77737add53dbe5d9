//! The kernel's side of the one bounds-checked accessor, [`Packet`].
//!
//! Both hooks read through the kernel's load-bytes helpers rather than direct
//! packet pointers: the helper checks bounds itself (also over non-linear skb
//! data, which direct access cannot see), and the offsets the parser computes
//! from IHL and extension-header lengths need no verifier-visible range proofs.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use pmtu_common::parse::{Link, Packet};

// Offsets go to the helpers as u32 unchecked: the parser's largest offset
// (Ethernet, two tags, two IPv6 headers with six maximal extension headers
// each) is under 25,000, and the helpers check offset + len against the
// packet themselves. A range check here would be worse than redundant: the
// verifier can prove its outcome, so it marks the offset precise, and then no
// two paths through the extension-header walk ever look alike to its state
// pruning (measured on 6.18: 224k instructions verified per program and 1 s
// to load, against 6.8k and 90 ms without it).

pub struct XdpPacket<'a>(pub &'a XdpContext);

impl Packet for XdpPacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: the program's own context; counts fragments too.
        unsafe { bpf_xdp_get_buff_len(self.0.ctx) as usize }
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
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
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
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

    #[inline(always)]
    fn is_gso(&self) -> bool {
        // SAFETY: `skb` points at the program's __sk_buff context; gso_size
        // is readable by tc programs (Linux 5.7+).
        unsafe { (*self.0.skb.skb).gso_size != 0 }
    }
}

/// The link layout of a tc program's interface: `L3` programs run on
/// devices without a link-layer header, where the kernel's
/// `skb->protocol` (network order in the low 16 bits) names the family.
#[inline(always)]
pub fn skb_link(ctx: &TcContext, l3: bool) -> Link {
    if !l3 {
        return Link::Ethernet;
    }
    // SAFETY: `skb` points at the program's __sk_buff context.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    Link::L3 { ethertype: u16::from_be(protocol as u16) }
}

#[inline(always)]
pub fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` points at the program's __sk_buff context.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The interface the packet came in on, 0 for locally generated packets.
#[inline(always)]
pub fn skb_ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).ingress_ifindex }
}

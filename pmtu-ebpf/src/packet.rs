//! The kernel's side of the one bounds-checked accessor, [`Packet`].
//!
//! - [`XdpPacket`] and [`SkbPacket`] read by direct packet access between
//!   `data` and `data_end` (an skb's linear data; bpf_skb_load_bytes for
//!   what lies beyond it). A load-bytes helper costs 27-38 ns a call on this
//!   kernel (retpolines); a direct read a few instructions.
//! - [`SkbLoaded`] reads through bpf_skb_load_bytes only. The tc programs
//!   use it where direct reads, each with its helper fallback, would have
//!   the verifier walk too many paths: the observer's PTB parser and
//!   checksums (direct: 49.7k and 53.0k instructions verified for tc
//!   ingress and egress, over the 50k budget; 25.3k and 28.9k this way) and
//!   the clamper's moving of options. XDP has no fallback, so its observer
//!   reads directly everywhere (23.0k).
//! - [`OptionsCopy`] serves the clamper's option walk from map memory.
//!
//! pmtu-ebpf/VERIFIER.md gathers these and every other verifier workaround.
//!
//! Every direct read launders its offset through per-CPU map memory (see
//! [`launder`]); without that, direct access made the XDP observer verify
//! 160k instructions and the tc observer 397k.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use pmtu_common::{
    parse::{Link, Packet},
    tcpopt::{OptionWalk, scan_step},
};

use crate::maps::{OFFSET_SCRATCH, OPTIONS_SCRATCH};

/// Offsets served by direct access. The check against it is made on the
/// laundered offset (see [`launder`]) and is the bound the verifier needs
/// for a variable offset on a packet pointer: that bound plus the access
/// must stay within MAX_PACKET_OFF (0xffff), or a comparison with data_end
/// proves no range (find_good_pkt_pointers; 0xffff failed to load). 0x7fff
/// leaves room for any N and covers every offset the parser reads at (the
/// largest, Ethernet, two tags, two IPv6 headers with six maximal extension
/// headers each, is under 25,000). Checked on the raw offset instead, the
/// verifier refined the offset and the scalars linked to it on each side of
/// the branch, and the checksum loop then exceeded its 1M-instruction limit.
const DIRECT_MASK: usize = 0x7fff;

/// `offset`, as a value the verifier knows nothing about: written to this
/// CPU's OFFSET_SCRATCH and read back.
///
/// The verifier marks a scalar added to a packet pointer precise, and that
/// precision flows back through every computation the offset came from (the
/// checksum loop's position, the option walk's index, the extension-header
/// lengths), so paths with different offsets are never pruned against each
/// other (seen in its log: `mark_precise: regs=r0 ... r0 += r1`, back to
/// the checksum loop's counter). It does not flow back through a load from
/// map memory. Measured on 6.18 for the XDP observer: 160k instructions
/// verified with the offsets used as they are, 23.0k laundered (22.9k with
/// the load-bytes helpers); the store and load cost ~1 ns a read. Volatile,
/// so LLVM does not forward the store to the load.
#[inline(always)]
fn launder(slot: *mut usize, offset: usize) -> usize {
    // SAFETY: `slot` is this CPU's OFFSET_SCRATCH value (see the
    // constructors); BPF programs are not preempted, so nothing else uses
    // it between the store and the load.
    unsafe {
        core::ptr::write_volatile(slot, offset);
        core::ptr::read_volatile(slot)
    }
}

/// How many bytes from the start of an skb tc reads directly at most,
/// beyond what its linear data ends at: all of them (the largest direct
/// offset plus any read). Tests load the programs with lower values to
/// stand for skbs whose linear data ends there, so that every read beyond
/// goes through the helper fallback (BPF_PROG_TEST_RUN only makes linear
/// skbs). In .rodata, so the verifier sees a constant.
#[unsafe(no_mangle)]
static PMTU_LINEAR_LIMIT: u64 = 0x1_0000;

#[inline(always)]
fn linear_limit() -> usize {
    // SAFETY: a plain static; volatile so the loader's value is read, not
    // the compiled-in one.
    unsafe { core::ptr::read_volatile(&raw const PMTU_LINEAR_LIMIT) as usize }
}

/// Where the `N` bytes at `offset` lie in the linear data `[data,
/// data_end)`; `None` if they are not all there, or `offset` is beyond
/// [`DIRECT_MASK`], or they end beyond `limit`.
#[inline(always)]
fn direct_at<const N: usize>(data: usize, data_end: usize, slot: *mut usize, offset: usize, limit: usize) -> Option<*const u8> {
    let off = launder(slot, offset);
    // A check on the laundered value: the verifier cannot resolve it, so
    // it neither marks it precise nor refines the parser's own offsets.
    //
    // The limit is compared with `off` itself (against `limit - N`), never
    // as `off + N > limit`: that makes a copy of `off` plus N, which Linux
    // 6.10 (to 6.12 at least) link to `off` (BPF_ADD_CONST); when it pins the
    // copy to one value (a test's limit of exactly N leaves only off = 0),
    // sync_linked_regs() gives `off` a known value with wrapped unsigned
    // bounds, which adjust_ptr_min_max_vals() takes for a dead branch: it
    // makes `data + off` a scalar ("R4 invalid mem access 'scalar'" on
    // Debian's 6.12.117; 6.1 has no linking, 6.18 keeps the bounds).
    // pmtu-ebpf/VERIFIER.md has the figures.
    if off > DIRECT_MASK {
        return None;
    }
    // XDP passes no limit (usize::MAX): this folds away there.
    if limit != usize::MAX && (N > limit || off > limit - N) {
        return None;
    }
    let at = data + off;
    // For N = 1, LLVM turns `at + 1 > data_end` into `at >= data_end`,
    // from which the verifier derives no range (find_good_pkt_pointers
    // skips a right-open compare at offset 0): hide the 1 from LLVM.
    let n = if N == 1 { core::hint::black_box(N) } else { N };
    if at + n > data_end {
        return None;
    }
    Some(at as *const u8)
}

/// Copies the `N` bytes at `at` (from [`direct_at`]) into `dst`.
#[inline(always)]
fn copy_direct<const N: usize>(at: *const u8, dst: &mut [u8; N]) {
    // SAFETY: [at, at + N) lies within the packet's linear data (direct_at
    // checked it, the check the verifier also requires), and `dst` is N
    // bytes of our own.
    unsafe { core::ptr::copy_nonoverlapping(at, dst.as_mut_ptr(), N) };
}

/// The `N` bytes at `at` (from [`direct_at`]), by value.
///
/// The trait's own `read` zero-fills a buffer first, and where a helper
/// fallback may write into it LLVM cannot drop the fill: it became a call
/// to the byte-at-a-time memset subprogram on every tc read (measured: the
/// tc observer +22 ns over the no-op on a TCP segment, +11 ns with this).
#[inline(always)]
fn value_direct<const N: usize>(at: *const u8) -> [u8; N] {
    // SAFETY: as in copy_direct; [u8; N] has no alignment requirement.
    unsafe { core::ptr::read_unaligned(at.cast::<[u8; N]>()) }
}

/// `data` and `data_end` of an xdp_md, loaded afresh for every read
/// (volatile), so that no packet pointer lives across reads or the helper
/// calls between them. No measurable effect on the verifier (the same
/// instruction count either way, measured); a precaution.
#[inline(always)]
fn xdp_bounds(ctx: *mut xdp_md) -> (usize, usize) {
    // SAFETY: the program's own context.
    unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx).data) as usize,
            core::ptr::read_volatile(&raw const (*ctx).data_end) as usize,
        )
    }
}

/// As [`xdp_bounds`], for an __sk_buff: its linear data.
#[inline(always)]
fn skb_bounds(skb: *mut __sk_buff) -> (usize, usize) {
    // SAFETY: the program's own context.
    unsafe {
        (
            core::ptr::read_volatile(&raw const (*skb).data) as usize,
            core::ptr::read_volatile(&raw const (*skb).data_end) as usize,
        )
    }
}

/// The length of an XDP frame: `data_end - data`.
///
/// pmtu's XDP program is not frags-aware (no BPF_F_XDP_HAS_FRAGS), so the
/// kernel only ever hands it linear frames where it is attached (a driver
/// refuses to attach it where frames could be multi-buffer, generic XDP
/// linearises the skb): `data..data_end` is the whole frame, as
/// bpf_xdp_get_buff_len (a helper call) would say.
#[inline(always)]
fn xdp_len(ctx: *mut xdp_md) -> usize {
    let (data, end) = xdp_bounds(ctx);
    end - data
}

/// An XDP frame, read directly (the frame is linear, see [`xdp_len`]).
pub struct XdpPacket<'a> {
    ctx: &'a XdpContext,
    slot: *mut usize,
}

impl<'a> XdpPacket<'a> {
    /// `None` only if the per-CPU scratch lookup fails (it cannot: index 0
    /// of a one-entry array).
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Option<Self> {
        Some(Self { ctx, slot: OFFSET_SCRATCH.get_ptr_mut(0)? })
    }
}

impl Packet for XdpPacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        xdp_len(self.ctx.ctx)
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        let (data, end) = xdp_bounds(self.ctx.ctx);
        match direct_at::<N>(data, end, self.slot, offset, usize::MAX) {
            Some(at) => {
                copy_direct(at, dst);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let (data, end) = xdp_bounds(self.ctx.ctx);
        direct_at::<N>(data, end, self.slot, offset, usize::MAX).map(value_direct)
    }
}

// Offsets go to the helper as u32 unchecked: the parser's largest offset is
// under 25,000 (see DIRECT_MASK), and the helper checks offset + len against
// the packet itself. A range check here would be worse than redundant: the
// verifier can prove its outcome, so it marks the offset precise, and then no
// two paths through the extension-header walk ever look alike to its state
// pruning (measured on 6.18: 224k instructions verified per program and 1 s
// to load, against 6.8k and 90 ms without it).

/// The N bytes at `offset` of an skb through bpf_skb_load_bytes, which also
/// reads non-linear data.
#[inline(always)]
fn skb_load<const N: usize>(skb: *mut __sk_buff, offset: usize, dst: &mut [u8; N]) -> bool {
    // SAFETY: the helper writes at most N bytes into `dst` and reports
    // failure if the packet is shorter.
    let ret = unsafe { bpf_skb_load_bytes(skb.cast(), offset as u32, dst.as_mut_ptr().cast::<c_void>(), N as u32) };
    ret == 0
}

/// An skb: its linear data read directly, anything beyond it (paged
/// fragments of a GRO/GSO packet whose headers were not pulled) through
/// bpf_skb_load_bytes. Nothing is pulled: bpf_skb_pull_data makes a cloned
/// skb (every TCP segment a host sends) writable, i.e. copies its head.
pub struct SkbPacket<'a> {
    ctx: &'a TcContext,
    slot: *mut usize,
}

impl<'a> SkbPacket<'a> {
    /// `None` only if the per-CPU scratch lookup fails (it cannot).
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Option<Self> {
        Some(Self { ctx, slot: OFFSET_SCRATCH.get_ptr_mut(0)? })
    }
}

impl Packet for SkbPacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.ctx.len() as usize
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        let (data, end) = skb_bounds(self.ctx.skb.skb);
        match direct_at::<N>(data, end, self.slot, offset, linear_limit()) {
            Some(at) => {
                copy_direct(at, dst);
                true
            }
            None => skb_load(self.ctx.skb.skb, offset, dst),
        }
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let (data, end) = skb_bounds(self.ctx.skb.skb);
        if let Some(at) = direct_at::<N>(data, end, self.slot, offset, linear_limit()) {
            return Some(value_direct(at));
        }
        let mut out = MaybeUninit::<[u8; N]>::uninit();
        // SAFETY: bpf_skb_load_bytes takes uninitialised memory
        // (ARG_PTR_TO_UNINIT_MEM) and writes at most N bytes into `out`.
        let ret = unsafe {
            bpf_skb_load_bytes(self.ctx.skb.skb.cast(), offset as u32, out.as_mut_ptr().cast::<c_void>(), N as u32)
        };
        // SAFETY: on success the helper wrote all N bytes.
        (ret == 0).then(|| unsafe { out.assume_init() })
    }

    #[inline(always)]
    fn is_gso(&self) -> bool {
        skb_is_gso(self.ctx)
    }
}

/// An skb read through bpf_skb_load_bytes only (see the module comment).
pub struct SkbLoaded<'a>(pub &'a TcContext);

impl Packet for SkbLoaded<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        skb_load(self.0.skb.skb, offset, dst)
    }

    #[inline(always)]
    fn is_gso(&self) -> bool {
        skb_is_gso(self.0)
    }
}

/// The first bytes of a frame, copied in one helper call: what `pmtu trace
/// --pcap` captures of a PTB. From offset 0 as the program sees the frame:
/// the Ethernet header at XDP and at tc on Ethernet interfaces (tc pushes
/// the MAC header back before running the program), the IP header at tc on
/// L3 ones.
pub trait FrameHead {
    /// Copies the frame's first min(length, N) bytes into `dst`; how many,
    /// 0 if none could be read (then `dst` is unspecified).
    fn read_head<const N: usize>(&self, dst: &mut MaybeUninit<[u8; N]>) -> usize;
}

/// How many bytes [`FrameHead::read_head`] copies of a `len`-byte frame:
/// min(len, N) for a frame of at least one byte (N for an empty one, which
/// the helper then refuses), as a value the verifier knows to lie in the
/// [1, N] a helper's size argument must have.
///
/// The bound comes from arithmetic, `((m - 1) & (N - 1)) + 1`, which lies
/// in [1, N] whatever the verifier knows of `m`; a test for 0 would not do:
/// before Linux 6.8 the verifier learns nothing from `m != 0` (only `m ==
/// 0` makes it a constant), and LLVM moved the test anyway, to a
/// zero-extended copy of a u32, or from an XDP frame's length to `data_end
/// == data`, which tells the verifier nothing about the length (`R4
/// invalid zero-sized read` on 6.18 each time). `black_box` keeps LLVM
/// from folding the mask back into a comparison.
#[inline(always)]
fn head_len<const N: usize>(len: usize) -> u32 {
    const { assert!(N.is_power_of_two() && N <= u16::MAX as usize) };
    let m = if len >= N { N } else { len };
    let m = core::hint::black_box(m);
    ((m.wrapping_sub(1) & (N - 1)) + 1) as u32
}

impl FrameHead for XdpPacket<'_> {
    #[inline(always)]
    fn read_head<const N: usize>(&self, dst: &mut MaybeUninit<[u8; N]>) -> usize {
        let n = head_len::<N>(xdp_len(self.ctx.ctx));
        // SAFETY: the helper writes n <= N bytes into `dst`, N bytes of
        // uninitialised memory it accepts (ARG_PTR_TO_UNINIT_MEM), and
        // fails without reading past the frame.
        let ret = unsafe { bpf_xdp_load_bytes(self.ctx.ctx, 0, dst.as_mut_ptr().cast::<c_void>(), n) };
        if ret == 0 { n as usize } else { 0 }
    }
}

impl FrameHead for SkbLoaded<'_> {
    #[inline(always)]
    fn read_head<const N: usize>(&self, dst: &mut MaybeUninit<[u8; N]>) -> usize {
        let n = head_len::<N>(self.0.len() as usize);
        // SAFETY: as for XDP; bpf_skb_load_bytes also reads paged data.
        let ret = unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast(), 0, dst.as_mut_ptr().cast::<c_void>(), n) };
        if ret == 0 { n as usize } else { 0 }
    }
}

/// Bytes in the per-CPU copy of a SYN's options: 40 of options, and room
/// for a read of up to 8 bytes at any index below 64 (the bound the mask in
/// [`OptionsCopy::read_into`] gives the verifier).
pub const OPTIONS_COPY: usize = 64 + 8;

/// The TCP options of a SYN, copied once (one read through [`SkbPacket`])
/// into per-CPU map memory and read from there, at their frame offsets, by
/// the option walk.
///
/// The walk reads one or two bytes per step: through bpf_skb_load_bytes
/// that was about ten helper calls per Linux SYN. Reading the packet
/// directly instead, each read with its helper fallback, made the clamper
/// verify 65.7k instructions (budget 50k); from the copy there is no
/// fallback, and offsets are laundered as for the packet (without that,
/// LLVM's code for the walk read a register it had never set on a path it
/// knew could not run, which the verifier refuses: "R8 !read_ok").
///
/// The copy cannot fail for a SYN that parse_syn accepted, so the walk has
/// no other source (a second walk through bpf_skb_load_bytes, for a
/// failed copy, had the verifier check the walk twice: 40.4k instructions
/// verified against 28.3k without it, before the walk ran in bpf_loop).
pub struct OptionsCopy {
    buf: *mut [u8; OPTIONS_COPY],
    /// Frame offset of the first option byte, and the options' length.
    start: usize,
    len: usize,
    slot: *mut usize,
}

impl OptionsCopy {
    /// Copies the `len` option bytes at `start` (a multiple of 4, at most
    /// 40, as Data Offset makes them); `None` if they cannot be read.
    #[inline(always)]
    pub fn load(pkt: &SkbPacket, start: usize, len: usize) -> Option<Self> {
        let buf = OPTIONS_SCRATCH.get_ptr_mut(0)?;
        // SAFETY: this CPU's OPTIONS_SCRATCH value; not preempted.
        let b = unsafe { &mut *buf };
        // One arm per length, each a read of constant size (the verifier
        // must know a read's size).
        macro_rules! copy {
            ($n:literal) => {
                pkt.read_into(start, b.first_chunk_mut::<$n>()?)
            };
        }
        let ok = match len {
            0 => true,
            4 => copy!(4),
            8 => copy!(8),
            12 => copy!(12),
            16 => copy!(16),
            20 => copy!(20),
            24 => copy!(24),
            28 => copy!(28),
            32 => copy!(32),
            36 => copy!(36),
            40 => copy!(40),
            _ => false,
        };
        ok.then_some(Self { buf, start, len, slot: pkt.slot })
    }

    /// One step of the walk over these options ([`scan_step`]).
    #[inline(always)]
    pub fn scan_step(&self, walk: &mut OptionWalk) -> bool {
        scan_step(self, self.start, self.len, walk)
    }
}

impl Packet for OptionsCopy {
    /// The end of the options: the walk reads nothing beyond them.
    #[inline(always)]
    fn len(&self) -> usize {
        self.start + self.len
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        // Laundered, as packet offsets are (see `launder`): the walk's
        // index must stay imprecise to the verifier.
        let rel = launder(self.slot, offset.wrapping_sub(self.start));
        if rel > 63 || rel + N > self.len || N > OPTIONS_COPY - 64 {
            return false;
        }
        // SAFETY: rel < 64 and N <= 8, so [rel, rel + N) lies within the
        // OPTIONS_COPY bytes of this CPU's OPTIONS_SCRATCH value, of which
        // the first `len` were copied from the packet by `load`.
        unsafe { core::ptr::copy_nonoverlapping((*self.buf).as_ptr().add(rel), dst.as_mut_ptr(), N) };
        true
    }
}

#[inline(always)]
fn skb_is_gso(ctx: &TcContext) -> bool {
    // SAFETY: `skb` points at the program's __sk_buff context; gso_size is
    // readable by tc programs (Linux 5.7+).
    unsafe { (*ctx.skb.skb).gso_size != 0 }
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

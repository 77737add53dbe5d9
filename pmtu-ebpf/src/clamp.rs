//! MSS clamping of SYN and SYN-ACK, the job of iptables' TCPMSS target
//! (net/netfilter/xt_TCPMSS.c, tcpmss_mangle_packet) done at tc.
//!
//! Checksums are fixed with bpf_l4_csum_replace/bpf_l3_csum_replace, which
//! do the right thing for every skb->ip_summed state: a full checksum is
//! updated incrementally; under CHECKSUM_PARTIAL (what veth and offloading
//! stacks hand over) only pseudo-header changes touch the check field, and
//! the device computes the rest over the bytes as they now are.

use core::{cmp::min, ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{
        BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SKIP_NEIGH, bpf_fib_lookup,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_csum_update, bpf_fib_lookup as fib_lookup, bpf_l3_csum_replace,
        bpf_l4_csum_replace, bpf_skb_change_tail, bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use pmtu_common::{
    parse::{Packet, Syn, SynOutcome, parse_syn},
    policy::{
        MAX_IFACES, MODE_SET_MSS, MODE_TO_PMTU,
        counters::{AT_OR_BELOW, CLAMPED, ERRORS, INSERTED, MALFORMED, NO_ROOM, NO_ROUTE, SYN_SEEN},
    },
    tcpopt::{MssOption, OptionScan, TCPOLEN_MSS, TCPOPT_MSS, scan_options},
};

use crate::{
    maps::{CLAMP_POLICY, CLAMP_SCRATCH, count_clamp},
    packet::{SkbPacket, skb_ifindex, skb_ingress_ifindex},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// RFC 9293 §3.7.1 / RFC 8200 §8.3: the MSS a peer must assume when none is
/// sent; xt_TCPMSS caps an inserted option at these.
const DEFAULT_MSS_V4: u32 = 536;
const DEFAULT_MSS_V6: u32 = 1220;

struct Failed;

#[inline(always)]
pub fn clamp(ctx: &TcContext) {
    // Parse first: most packets are not SYNs, and they leave before the
    // policy hash lookup (which cost every packet ~40 ns, see BENCHMARKS.md).
    let pkt = SkbPacket(ctx);
    let mut syn = Syn::default();
    let outcome = parse_syn(&pkt, &mut syn);
    if matches!(outcome, SynOutcome::NotIp | SynOutcome::NotSyn | SynOutcome::FragmentSkipped) {
        return;
    }
    // SAFETY: the map value is plain data, read once.
    let Some(policy) = (unsafe { CLAMP_POLICY.get(&skb_ifindex(ctx)) }) else {
        return;
    };
    let policy = *policy;
    if policy.slot >= MAX_IFACES || (policy.mode != MODE_SET_MSS && policy.mode != MODE_TO_PMTU) {
        return;
    }
    let slot = policy.slot;
    if outcome == SynOutcome::Malformed {
        count_clamp(slot, MALFORMED);
        return;
    }
    count_clamp(slot, SYN_SEEN);

    let target = if policy.mode == MODE_SET_MSS {
        policy.mss
    } else {
        match pmtu_mss(ctx, &syn) {
            Some(mss) => mss,
            None => {
                count_clamp(slot, NO_ROUTE);
                return;
            }
        }
    };

    let scan = scan_options(&pkt, syn.l4 + 20, syn.tcp_hdr_len - 20);
    if scan.malformed {
        count_clamp(slot, MALFORMED);
        return;
    }
    // Every path through the parser (family, VLAN tags, extension headers,
    // option layouts) arrives here with its own exact offsets; run through
    // scratch memory, they become one state for the verifier, which then
    // checks the rewrite code once rather than once per path (216k
    // verified instructions before, see tests/prog_test_run.rs).
    let Some(plan) = launder(Plan { syn, target, scan }) else {
        return;
    };
    let Plan { syn, target, scan } = plan;
    let outcome = if scan.mss_count == 0 {
        insert_mss(ctx, &pkt, &syn, target)
    } else {
        lower_mss(ctx, &syn, target, &scan)
    };
    count_clamp(slot, outcome.unwrap_or(ERRORS));
}

/// What the rewrite needs to know.
#[derive(Clone, Copy)]
pub struct Plan {
    syn: Syn,
    target: u32,
    scan: OptionScan,
}

/// Writes `plan` to per-CPU scratch memory and reads it back, so the
/// verifier sees values it knows nothing about rather than one exact value
/// per path. Volatile so the compiler cannot forward the stores to the loads.
#[inline(always)]
fn launder(plan: Plan) -> Option<Plan> {
    let slot = CLAMP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a valid per-CPU map value of type Plan; BPF programs are not
    // preempted, so nothing else uses this CPU's slot meanwhile.
    unsafe {
        core::ptr::write_volatile(slot, plan);
        Some(core::ptr::read_volatile(slot))
    }
}

/// The lower of the route MTUs toward the destination and back toward the
/// source, less the IP and TCP headers: xt_TCPMSS's
/// `min(dst_mtu(skb_dst(skb)), tcpmss_reverse_mtu()) - minlen`.
#[inline(always)]
fn pmtu_mss(ctx: &TcContext, syn: &Syn) -> Option<u32> {
    // Forwarded packets are looked up as input from where they came in;
    // locally generated ones (egress, no ingress interface) as output.
    let ingress = skb_ingress_ifindex(ctx);
    let (ifindex, flags) = if ingress != 0 {
        (ingress, BPF_FIB_LOOKUP_SKIP_NEIGH)
    } else {
        (skb_ifindex(ctx), BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH)
    };
    let forward = route_mtu(ctx, syn.family, &syn.src, &syn.dst, ifindex, flags)?;
    // As tcpmss_reverse_mtu: no route back means no limit from that side.
    let reverse = route_mtu(ctx, syn.family, &syn.dst, &syn.src, ifindex, flags).unwrap_or(u32::MAX);
    let mtu = min(forward, reverse);
    let minlen = if syn.family == 4 { 40 } else { 60 };
    // xt_TCPMSS drops here ("unknown or invalid path-MTU"); pmtu fails open.
    if mtu <= minlen { None } else { Some(mtu - minlen) }
}

/// The route MTU (PMTU exceptions included) from `src` to `dst`, by asking
/// for a 65535-byte packet: bpf_fib_lookup then reports the MTU it would
/// have to fragment at (BPF_FIB_LKUP_RET_FRAG_NEEDED, params.mtu_result).
#[inline(always)]
fn route_mtu(ctx: &TcContext, family: u8, src: &[u8; 16], dst: &[u8; 16], ifindex: u32, flags: u32) -> Option<u32> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = if family == 4 { AF_INET } else { AF_INET6 };
    p.l4_protocol = 6;
    p.__bindgen_anon_1.tot_len = 0xffff;
    p.ifindex = ifindex;
    if family == 4 {
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([src[0], src[1], src[2], src[3]]);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]);
    } else {
        let mut s = [0u32; 4];
        let mut d = [0u32; 4];
        let mut i = 0;
        while i < 4 {
            s[i] = u32::from_ne_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]]);
            d[i] = u32::from_ne_bytes([dst[4 * i], dst[4 * i + 1], dst[4 * i + 2], dst[4 * i + 3]]);
            i += 1;
        }
        p.__bindgen_anon_3.ipv6_src = s;
        p.__bindgen_anon_4.ipv6_dst = d;
    }
    // SAFETY: `p` is a properly sized bpf_fib_lookup on our stack.
    let rc = unsafe {
        fib_lookup(ctx.skb.skb.cast::<c_void>(), &mut p, size_of::<bpf_fib_lookup>() as i32, flags)
    };
    match rc as u32 {
        // SAFETY: the kernel wrote mtu_result over tot_len.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Some(unsafe { p.__bindgen_anon_1.mtu_result } as u32),
        BPF_FIB_LKUP_RET_SUCCESS => Some(0xffff),
        _ => None,
    }
}

/// Network-order bytes as the native integer the csum helpers take.
#[inline(always)]
fn ne16(v: u16) -> u64 {
    u16::from_ne_bytes(v.to_be_bytes()) as u64
}

#[inline(always)]
fn store<const N: usize>(ctx: &TcContext, off: usize, bytes: &[u8; N]) -> Result<(), Failed> {
    // SAFETY: N bytes from our stack; the helper bounds-checks the packet.
    // Flags 0: skb->csum is kept right by the csum_replace calls, which
    // offset every byte changed here (see insert_mss).
    let rc = unsafe {
        bpf_skb_store_bytes(ctx.skb.skb, off as u32, bytes.as_ptr().cast::<c_void>(), N as u32, 0)
    };
    if rc == 0 { Ok(()) } else { Err(Failed) }
}

#[inline(always)]
fn l4_replace(ctx: &TcContext, syn: &Syn, from: u64, to: u64, flags: u64) -> Result<(), Failed> {
    // The TCP checksum is at offset 16 of the header.
    // SAFETY: plain helper call on our skb.
    let rc = unsafe { bpf_l4_csum_replace(ctx.skb.skb, (syn.l4 + 16) as u32, from, to, flags) };
    if rc == 0 { Ok(()) } else { Err(Failed) }
}

/// Lowers every MSS option above `target` in place (only ever lowers:
/// xt_TCPMSS "Never increase MSS, even when setting it").
#[inline(always)]
fn lower_mss(ctx: &TcContext, syn: &Syn, target: u32, scan: &OptionScan) -> Result<u32, u32> {
    let mut lowered = false;
    let mut k = 0;
    while k < scan.mss_count as usize && k < scan.mss.len() {
        let MssOption { value_at, value: old } = scan.mss[k];
        if old as u32 > target {
            let new = target as u16;
            store(ctx, value_at, &new.to_be_bytes()).map_err(|_| ERRORS)?;
            l4_replace(ctx, syn, ne16(old), ne16(new), 2).map_err(|_| ERRORS)?;
            lowered = true;
        }
        k += 1;
    }
    Ok(if lowered { CLAMPED } else { AT_OR_BELOW })
}

/// Adds an MSS option in front of the others, as xt_TCPMSS does, when the
/// segment has none, carries no data and its header can grow by 4 bytes.
#[inline(always)]
fn insert_mss(ctx: &TcContext, pkt: &SkbPacket, syn: &Syn, target: u32) -> Result<u32, u32> {
    // Data after the header would have to move, and the SYN grow past what
    // the sender sized it for; a 60-byte header has no room (doff is 4 bits).
    if syn.payload_len() != 0 || syn.tcp_hdr_len >= 60 || syn.more_fragments {
        return Ok(NO_ROOM);
    }
    let default = if syn.family == 4 { DEFAULT_MSS_V4 } else { DEFAULT_MSS_V6 };
    let mss = min(target, default) as u16;
    let tcp_len = (syn.ip_end - syn.l4) as u16;
    let opt_off = syn.l4 + 20;

    // Make the datagram 4 bytes longer (this also drops any Ethernet
    // padding, which tc ingress can still see).
    // SAFETY: plain helper call on our skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (syn.ip_end + 4) as u32, 0) } != 0 {
        return Err(ERRORS);
    }
    shift_options(ctx, pkt, opt_off, syn.tcp_hdr_len - 20)?;
    let m = mss.to_be_bytes();
    let option = [TCPOPT_MSS, TCPOLEN_MSS, m[0], m[1]];
    store(ctx, opt_off, &option).map_err(|_| ERRORS)?;
    // Moving the old options by 4 bytes keeps their 16-bit alignment, so
    // their share of the sum is unchanged: only the new word counts.
    l4_replace(ctx, syn, 0, u32::from_ne_bytes(option) as u64, 4).map_err(|_| ERRORS)?;

    // Data Offset + 1 (4 bytes); the flags byte shares the 16-bit word.
    let doff_old = ((syn.tcp_hdr_len / 4) as u8) << 4;
    let doff_new = doff_old + 0x10;
    let flags_byte = syn.flags;
    store(ctx, syn.l4 + 12, &[doff_new]).map_err(|_| ERRORS)?;
    l4_replace(
        ctx,
        syn,
        u16::from_ne_bytes([doff_old, flags_byte]) as u64,
        u16::from_ne_bytes([doff_new, flags_byte]) as u64,
        2,
    )
    .map_err(|_| ERRORS)?;
    // The TCP length in the pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
    l4_replace(ctx, syn, ne16(tcp_len), ne16(tcp_len + 4), 2 | BPF_F_PSEUDO_HDR as u64).map_err(|_| ERRORS)?;

    if syn.family == 4 {
        let total = (syn.ip_end - syn.l3) as u16;
        store(ctx, syn.l3 + 2, &(total + 4).to_be_bytes()).map_err(|_| ERRORS)?;
        // SAFETY: plain helper call; the IPv4 checksum is at offset 10.
        let rc = unsafe { bpf_l3_csum_replace(ctx.skb.skb, (syn.l3 + 10) as u32, ne16(total), ne16(total + 4), 2) };
        if rc != 0 {
            return Err(ERRORS);
        }
    } else {
        let plen = (syn.ip_end - syn.l3 - 40) as u16;
        store(ctx, syn.l3 + 4, &(plen + 4).to_be_bytes()).map_err(|_| ERRORS)?;
        // No IPv6 header checksum to offset it, so tell a CHECKSUM_COMPLETE
        // skb->csum about the length change (a no-op in any other state).
        let from = [(plen >> 8) as u8, plen as u8, 0, 0];
        let to = [((plen + 4) >> 8) as u8, (plen + 4) as u8, 0, 0];
        // SAFETY: two 4-byte buffers on our stack.
        unsafe {
            let diff = bpf_csum_diff(
                from.as_ptr() as *mut u32,
                4,
                to.as_ptr() as *mut u32,
                4,
                0,
            );
            if diff >= 0 {
                bpf_csum_update(ctx.skb.skb, diff as u32);
            }
        }
    }
    Ok(INSERTED)
}

/// Moves the `len` option bytes at `off` 4 bytes later.
///
/// One arm per possible length (a multiple of 4, 0..=40), each with
/// constant sizes: a variable size would be a helper's size argument, which
/// the verifier must know exactly, and that precision would flow back into
/// the option walk above, multiplying its states by eleven (measured).
#[inline(always)]
fn shift_options(ctx: &TcContext, pkt: &SkbPacket, off: usize, len: usize) -> Result<(), u32> {
    macro_rules! shift {
        ($n:literal) => {{
            let mut buf = [0u8; $n];
            if !pkt.read_into(off, &mut buf) {
                return Err(ERRORS);
            }
            store(ctx, off + 4, &buf).map_err(|_| ERRORS)
        }};
    }
    match len {
        0 => Ok(()),
        4 => shift!(4),
        8 => shift!(8),
        12 => shift!(12),
        16 => shift!(16),
        20 => shift!(20),
        24 => shift!(24),
        28 => shift!(28),
        32 => shift!(32),
        36 => shift!(36),
        40 => shift!(40),
        _ => Err(MALFORMED),
    }
}

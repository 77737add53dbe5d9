//! One way to ask the kernel's FIB (bpf_fib_lookup), shared by the
//! clamper's route MTU and the observer's direction of a PTB.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{bindings::bpf_fib_lookup, helpers::generated::bpf_fib_lookup as fib_lookup};

/// BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3) where the kernel has it, else 0:
/// bpf_fib_lookup fails every lookup with -EINVAL for a flag it does not
/// know, so the loader probes for it (`pmtu_probe_fib`) and sets this
/// before loading. Without it the lookups still give what pmtu asks (the
/// egress interface and the MTU are set before the neighbour is looked up;
/// an unresolved one answers BPF_FIB_LKUP_RET_NO_NEIGH, taken as routed).
/// In .rodata, so the verifier sees a constant.
#[unsafe(no_mangle)]
static PMTU_FIB_SKIP_NEIGH: u32 = aya_ebpf::bindings::BPF_FIB_LOOKUP_SKIP_NEIGH;

/// The BPF_FIB_LOOKUP_SKIP_NEIGH flag if this kernel has it, else 0.
#[inline(always)]
pub fn skip_neigh() -> u32 {
    // SAFETY: a plain static; volatile so the loader's value is read, not
    // the compiled-in one.
    unsafe { core::ptr::read_volatile(&raw const PMTU_FIB_SKIP_NEIGH) }
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What a lookup answered: the BPF_FIB_LKUP_RET_* code and the request as
/// the kernel left it (egress `ifindex`, `mtu_result`, ...).
pub struct Answer {
    pub rc: u32,
    pub params: bpf_fib_lookup,
}

/// Looks up `src` → `dst` (IPv4 in the first four bytes) for protocol
/// `l4`, as a packet of `tot_len` bytes from interface `ifindex`, with
/// BPF_FIB_LOOKUP_* `flags`. `ctx` is the program's own context (xdp_md or
/// __sk_buff).
#[inline(always)]
pub fn lookup(
    ctx: *mut c_void,
    family: u8,
    l4: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    ifindex: u32,
    tot_len: u16,
    flags: u32,
) -> Answer {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = if family == 4 { AF_INET } else { AF_INET6 };
    p.l4_protocol = l4;
    p.__bindgen_anon_1.tot_len = tot_len;
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
    // SAFETY: `p` is a properly sized bpf_fib_lookup on our stack; `ctx`
    // is the calling program's own context.
    let rc = unsafe { fib_lookup(ctx, &mut p, size_of::<bpf_fib_lookup>() as i32, flags) };
    Answer { rc: rc as u32, params: p }
}

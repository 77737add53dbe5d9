//! Plain types and pure logic shared by the pmtu eBPF programs and userspace.
//!
//! Everything that crosses the kernel/userspace boundary is defined here once:
//! `#[repr(C)]`, fixed-width integers only, explicit padding, sizes asserted at
//! compile time. The packet parser lives here too, generic over a bounds-checked
//! [`parse::Packet`] accessor, so the very code the kernel runs is also tested
//! (and later fuzzed) on the host against plain byte slices.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod counters;
pub mod csum;
pub mod event;
pub mod flow;
pub mod learned;
pub mod parse;
pub mod policy;
pub mod ratelimit;
pub mod rewrite;
pub mod tcpopt;
pub mod validate;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these types are #[repr(C)], made only of integers and byte arrays,
    // and have no implicit padding (sizes are asserted in their modules).
    unsafe impl aya::Pod for crate::event::PtbEvent {}
    unsafe impl bytemuck::Zeroable for crate::event::PtbEvent {}
    unsafe impl bytemuck::Pod for crate::event::PtbEvent {}
    unsafe impl bytemuck::Zeroable for crate::event::CapturedPtb {}
    unsafe impl bytemuck::Pod for crate::event::CapturedPtb {}
    unsafe impl aya::Pod for crate::policy::ClampPolicy {}
    unsafe impl aya::Pod for crate::flow::ObserverConfig {}
    unsafe impl aya::Pod for crate::flow::FlowKey {}
    unsafe impl aya::Pod for crate::flow::FlowState {}
    unsafe impl aya::Pod for crate::learned::LearnedKey {}
    unsafe impl aya::Pod for crate::learned::Learned {}
    unsafe impl aya::Pod for crate::learned::LearnConfig {}
    unsafe impl bytemuck::Zeroable for crate::learned::ClampEvent {}
    unsafe impl bytemuck::Pod for crate::learned::ClampEvent {}
}

//! The eBPF programs' per-CPU counters, summed over CPUs.

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use pmtu_common::counters::{COUNT, NAMES};

/// Counter totals in `pmtu_common::counters` order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNT as usize]);

impl Counters {
    pub fn read<T: std::borrow::Borrow<MapData>>(
        map: &PerCpuArray<T, u64>,
    ) -> anyhow::Result<Self> {
        let mut totals = [0u64; COUNT as usize];
        for (index, total) in totals.iter_mut().enumerate() {
            let per_cpu = map
                .get(&(index as u32), 0)
                .with_context(|| format!("reading counter {}", NAMES[index]))?;
            *total = per_cpu.iter().sum();
        }
        Ok(Self(totals))
    }

    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        NAMES.iter().copied().zip(self.0.iter().copied())
    }
}

//! Section 4: the event pipeline at the highest rates available, at two
//! ring sizes: PTBs produced in the kernel, events delivered to userspace
//! (decoded and aggregated), lost and rate-limited, with
//! produced == delivered + lost + rate-limited checked exactly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use pmtu_common::{counters, flow::ObserverConfig};
use pmtu_user::{
    decode::decode,
    loader::{PROG_TC_EGRESS, PROG_XDP, Programs, Role},
    table::{DEFAULT_EXPIRES_SECS, DEFAULT_MAX_DESTINATIONS, Table},
};
use serde::Serialize;

use super::Plan;
use crate::{cases::ptb4, frames::*, soak};

#[derive(Debug, Serialize)]
pub struct PipelineRun {
    /// "test_run" (BPF_PROG_TEST_RUN repeat, one CPU producing) or
    /// "veth flood" (raw-socket PTBs through a router, as in the soak).
    pub source: &'static str,
    pub ring_kib: u32,
    pub seconds: f64,
    pub produced: u64,
    pub delivered: u64,
    pub lost: u64,
    pub rate_limited: u64,
    pub produced_per_s: f64,
    pub delivered_per_s: f64,
    pub identity_holds: bool,
}

/// Makes every event of `ptb4` a valid one, as on the host it is for: its
/// destination is local and the flow it quotes was seen leaving.
fn valid_events(p: &mut Programs) -> anyhow::Result<()> {
    p.set_local_addr("192.168.5.1".parse()?)?;
    let flow = eth(&[], ETH_P_IP, &V4::new("192.168.5.1", "192.168.7.2", 17).build(&udp_head(40000, 53)));
    let egress: &mut aya::programs::SchedClassifier = p.ebpf_mut().program_mut(PROG_TC_EGRESS).expect("egress").try_into()?;
    egress.test_run(TestRunOptions { data_in: Some(&flow), ..Default::default() })?;
    Ok(())
}

fn test_run_source(events: u32, ring_kib: u32) -> anyhow::Result<PipelineRun> {
    let mut p = Programs::load(Role::Observer, Some(ring_kib * 1024))?;
    p.set_observer_config(ObserverConfig { reporter_rate: 0, global_rate: 0, ..ObserverConfig::DEFAULT })?;
    let mut ring = p.take_events()?;
    valid_events(&mut p)?;

    let done = Arc::new(AtomicBool::new(false));
    let consumer_done = done.clone();
    // The consumer does what `pmtu trace` does per event: decode, aggregate.
    let consumer = std::thread::spawn(move || {
        let mut table = Table::new(std::num::NonZeroUsize::new(DEFAULT_MAX_DESTINATIONS).expect("cap"), DEFAULT_EXPIRES_SECS);
        let mut delivered = 0u64;
        loop {
            let finished = consumer_done.load(Ordering::Acquire);
            let mut got = false;
            while let Some(item) = ring.next() {
                if let Ok(ptb) = decode(&item) {
                    table.record(&ptb);
                }
                delivered += 1;
                got = true;
            }
            if finished && !got {
                break;
            }
            if !got {
                std::thread::yield_now();
            }
        }
        delivered
    });
    let frame = eth(&[], ETH_P_IP, &ptb4(1370));
    let xdp: &mut Xdp = p.ebpf_mut().program_mut(PROG_XDP).expect("xdp").try_into()?;
    let started = Instant::now();
    // In batches, so the consumer has a chance between them as it would
    // between packets; one batch of `events` would only measure the ring.
    let batch = 10_000;
    for _ in 0..events.div_ceil(batch) {
        xdp.test_run(TestRunOptions { data_in: Some(&frame), repeat: batch, ..Default::default() })?;
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let delivered = consumer.join().map_err(|_| anyhow::anyhow!("consumer panicked"))?;
    let c = p.counters()?;
    let produced = c.get(counters::PTB_V4);
    let lost = c.get(counters::RING_LOST);
    let rate_limited = c.get(counters::RATE_LIMITED);
    Ok(PipelineRun {
        source: "test_run",
        ring_kib,
        seconds,
        produced,
        delivered,
        lost,
        rate_limited,
        produced_per_s: produced as f64 / seconds,
        delivered_per_s: delivered as f64 / seconds,
        identity_holds: produced == delivered + lost + rate_limited,
    })
}

/// The consumer alone: the ring is filled first (the producer is then not
/// what limits the rate), and the time to drain it, decode every record and
/// aggregate it into the table is what is measured, round after round.
pub fn consumer_alone(rounds: u32) -> anyhow::Result<PipelineRun> {
    const RING_KIB: u32 = 16 * 1024;
    // 104-byte records and 8-byte headers: what fits without loss.
    let per_round = (RING_KIB * 1024 / 112) - 16;
    let mut p = Programs::load(Role::Observer, Some(RING_KIB * 1024))?;
    p.set_observer_config(ObserverConfig { reporter_rate: 0, global_rate: 0, ..ObserverConfig::DEFAULT })?;
    let mut ring = p.take_events()?;
    valid_events(&mut p)?;
    let frame = eth(&[], ETH_P_IP, &ptb4(1370));
    let mut table = Table::new(std::num::NonZeroUsize::new(DEFAULT_MAX_DESTINATIONS).expect("cap"), DEFAULT_EXPIRES_SECS);
    let mut delivered = 0u64;
    let mut seconds = 0f64;
    for _ in 0..rounds {
        let xdp: &mut Xdp = p.ebpf_mut().program_mut(PROG_XDP).expect("xdp").try_into()?;
        xdp.test_run(TestRunOptions { data_in: Some(&frame), repeat: per_round, ..Default::default() })?;
        let started = Instant::now();
        while let Some(item) = ring.next() {
            if let Ok(ptb) = decode(&item) {
                table.record(&ptb);
            }
            delivered += 1;
        }
        seconds += started.elapsed().as_secs_f64();
    }
    let c = p.counters()?;
    let produced = c.get(counters::PTB_V4);
    let lost = c.get(counters::RING_LOST);
    let rate_limited = c.get(counters::RATE_LIMITED);
    Ok(PipelineRun {
        source: "consumer alone",
        ring_kib: RING_KIB,
        seconds,
        produced,
        delivered,
        lost,
        rate_limited,
        // Here "produced/s" is not meaningful (the ring is filled while
        // the clock is stopped): only the drain is timed.
        produced_per_s: 0.0,
        delivered_per_s: delivered as f64 / seconds,
        identity_holds: produced == delivered + lost + rate_limited,
    })
}

fn flood_source(secs: u64, ring_kib: u32) -> anyhow::Result<PipelineRun> {
    let kib = ring_kib.to_string();
    let f = soak::run_with(secs, &["--ring-kib", &kib, "--rate-per-reporter", "0", "--rate-global", "0"])?;
    Ok(PipelineRun {
        source: "veth flood",
        ring_kib,
        seconds: f.secs,
        produced: f.produced,
        delivered: f.delivered,
        lost: f.lost,
        rate_limited: f.rate_limited,
        produced_per_s: f.produced as f64 / f.secs,
        delivered_per_s: f.delivered as f64 / f.secs,
        identity_holds: f.identity_holds(),
    })
}

pub fn measure(plan: &Plan) -> anyhow::Result<Vec<PipelineRun>> {
    let mut runs = Vec::new();
    for ring_kib in [256, 16 * 1024] {
        runs.push(test_run_source(plan.pipeline_events, ring_kib)?);
    }
    runs.push(consumer_alone(if plan.quick { 3 } else { 10 })?);
    for ring_kib in [256, 16 * 1024] {
        runs.push(flood_source(plan.flood_secs, ring_kib)?);
    }
    Ok(runs)
}

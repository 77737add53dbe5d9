//! Section 6: time from `pmtu trace` starting to it saying it is attached.

use std::time::{Duration, Instant};

use pmtu_user::lab::SeedLab;
use serde::Serialize;

use super::{Plan, Stats};
use crate::procs::start_trace;

#[derive(Debug, Serialize)]
pub struct Startup {
    /// Milliseconds, process start to "attached" (load, verify, attach XDP
    /// and tc on one interface).
    pub attach_ms: Stats,
    pub detach_ms: Stats,
}

pub fn measure(plan: &Plan) -> anyhow::Result<Startup> {
    let lab = SeedLab::build()?;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for _ in 0..plan.startup_rounds {
        let t = Instant::now();
        let trace = start_trace(&lab.h0, &["-i", SeedLab::H0_IF]);
        attach.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let run = trace.stop(libc::SIGTERM, Duration::from_secs(20));
        detach.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(run.status.success(), "pmtu trace failed: {:?}", run.stderr);
    }
    Ok(Startup { attach_ms: Stats::of(&attach), detach_ms: Stats::of(&detach) })
}

//! `cargo xtask bench`: figures, not tests. Nothing here asserts a time;
//! every figure goes to target/bench/report.json and, through
//! [`markdown`], to BENCHMARKS.md.
//!
//! The machine is shared and noisy, so figures are medians of interleaved
//! rounds, reported with min and max and as ratios to an anchor measured in
//! the same run (a no-op program, no program, iptables).

pub mod forward;
pub mod kernel;
pub mod markdown;
pub mod memory;
pub mod pipeline;
pub mod startup;

use serde::Serialize;

/// How long and how often to measure.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// BPF_PROG_TEST_RUN repeat count and rounds per (program, class).
    pub repeat: u32,
    pub rounds: u32,
    /// Forwarding and SYN arms: rounds and seconds per measurement.
    pub net_rounds: u32,
    pub net_secs: u32,
    /// Event pipeline: PTBs produced per TestRun source run, and flood
    /// seconds per ring size.
    pub pipeline_events: u32,
    pub flood_secs: u64,
    pub startup_rounds: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self { quick, repeat: 1_000_000, rounds: 3, net_rounds: 2, net_secs: 2, pipeline_events: 1_000_000, flood_secs: 3, startup_rounds: 3 }
        } else {
            Self { quick, repeat: 1_000_000, rounds: 7, net_rounds: 5, net_secs: 5, pipeline_events: 5_000_000, flood_secs: 10, startup_rounds: 7 }
        }
    }
}

/// Median, min and max of a sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self { median, min: v.first().copied().unwrap_or(f64::NAN), max: v.last().copied().unwrap_or(f64::NAN), n }
    }
}

/// Facts about the machine the figures came from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    /// /proc/sys/net/core/bpf_jit_enable (1: every program is JIT-compiled).
    pub bpf_jit_enable: String,
    /// Every loaded pmtu program reported a JIT image (bpf_prog_info.jited_prog_len > 0).
    pub programs_jited: bool,
    pub date: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("unreadable: {e}"))
}

impl Machine {
    pub fn probe(programs_jited: bool) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        Self {
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            bpf_jit_enable: read_trim("/proc/sys/net/core/bpf_jit_enable"),
            programs_jited,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub plan: Plan,
    pub machine: Machine,
    pub prog_cost: kernel::ProgCost,
    pub forwarding: forward::Arms,
    pub syn_rate: forward::Arms,
    pub pipeline: Vec<pipeline::PipelineRun>,
    pub memory: Vec<memory::MemoryPoint>,
    /// Locked kernel memory of each role's maps.
    pub role_memlock: Vec<memory::RoleMemlock>,
    pub startup: startup::Startup,
}

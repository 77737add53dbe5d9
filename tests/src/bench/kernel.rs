//! Section 1: each program's cost per packet class, by BPF_PROG_TEST_RUN,
//! next to a no-op program of the same type (the floor: test-run overhead).

use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use pmtu_common::{
    flow::ObserverConfig,
    policy::{ClampPolicy, MODE_SET_MSS},
};
use pmtu_user::loader::{
    PROG_CLAMP_INGRESS, PROG_NOOP_TC, PROG_NOOP_XDP, PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Programs, Role,
};
use serde::Serialize;

use super::{Plan, Stats};
use crate::{
    cases::ptb4,
    frames::*,
};

#[derive(Debug, Serialize)]
pub struct CostRow {
    pub program: &'static str,
    pub class: &'static str,
    /// ns per run (kernel-measured mean over `repeat`, then across rounds).
    pub ns: Stats,
    pub floor_ns: f64,
    pub ratio_to_floor: f64,
    /// "repeat": `repeat` runs per sample; "single": one run per sample,
    /// for classes the program changes in place (a rewritten SYN would be
    /// already clamped on the second run).
    pub method: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ProgCost {
    pub repeat: u32,
    pub rounds: u32,
    pub single_samples: u32,
    pub rows: Vec<CostRow>,
    pub verified_insns: Vec<(&'static str, u32)>,
    pub jited_bytes: Vec<(&'static str, u32)>,
}

const H0: &str = "192.168.5.1";
const H3: &str = "192.168.7.2";

struct Class {
    name: &'static str,
    frame: Vec<u8>,
    single: bool,
    config: ObserverConfig,
}

fn classes() -> Vec<Class> {
    let unlimited = ObserverConfig { reporter_rate: 0, global_rate: 0, ..ObserverConfig::DEFAULT };
    let limited = ObserverConfig { reporter_rate: 1, reporter_burst: 1, global_rate: 0, ..ObserverConfig::DEFAULT };
    let v4tcp = |flags, opts: &[u8], payload: &[u8]| eth(&[], ETH_P_IP, &V4::new(H0, H3, 6).build(&tcp(H0, H3, flags, opts, payload)));
    vec![
        Class { name: "non-ip", frame: eth(&[], ETH_P_ARP, &[0u8; 28]), single: false, config: unlimited },
        Class { name: "tcp-data", frame: v4tcp(ACK, &[], &[0u8; 1400]), single: false, config: unlimited },
        Class { name: "syn-rewrite", frame: v4tcp(SYN, &linux_syn_options(1460), &[]), single: true, config: unlimited },
        Class { name: "syn-below", frame: v4tcp(SYN, &linux_syn_options(1200), &[]), single: false, config: unlimited },
        Class { name: "ptb-valid", frame: eth(&[], ETH_P_IP, &ptb4(1370)), single: false, config: unlimited },
        Class { name: "ptb-rate-limited", frame: eth(&[], ETH_P_IP, &ptb4(1370)), single: false, config: limited },
    ]
}

/// The UDP flow `ptb4` quotes, leaving h0: recorded at egress, it makes
/// the PTB valid.
fn quoted_flow_frame() -> Vec<u8> {
    eth(&[], ETH_P_IP, &V4::new(H0, H3, 17).build(&udp_head(40000, 53)))
}

fn run_once(p: &mut Programs, prog: &str, frame: &[u8], repeat: u32) -> f64 {
    let mut out = vec![0u8; frame.len() + 64];
    let program = p.ebpf_mut().program_mut(prog).expect("program");
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..Default::default() };
    let res = if prog.contains("xdp") {
        <&mut Xdp>::try_from(program).expect("xdp").test_run(opts)
    } else {
        <&mut SchedClassifier>::try_from(program).expect("tc").test_run(opts)
    }
    .expect("test_run");
    res.duration.as_nanos() as f64
}

fn drain(ring: &mut RingBuf<MapData>) {
    while ring.next().is_some() {}
}

pub fn measure(plan: &Plan) -> anyhow::Result<ProgCost> {
    // A ring big enough for a whole round of valid PTBs, drained between
    // rounds, so "ptb-valid" always measures a written event.
    let ring_bytes = (plan.repeat as u64 * 128).next_power_of_two().max(4096) as u32;
    let mut p = Programs::load(Role::Bench, Some(ring_bytes))?;
    let mut ring = p.take_events()?;
    p.set_clamp_policy(1, ClampPolicy { mode: MODE_SET_MSS, mss: 1360, slot: 0, _pad: 0 })?;
    let programs: [(&'static str, &'static str); 4] = [
        (PROG_XDP, PROG_NOOP_XDP),
        (PROG_TC_INGRESS, PROG_NOOP_TC),
        (PROG_TC_EGRESS, PROG_NOOP_TC),
        (PROG_CLAMP_INGRESS, PROG_NOOP_TC),
    ];
    let single_samples = if plan.quick { 2_000 } else { 10_000 };
    let classes = classes();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); classes.len() * programs.len()];
    let mut floors: Vec<Vec<f64>> = vec![Vec::new(); classes.len() * 2];
    for _round in 0..plan.rounds {
        for (ci, class) in classes.iter().enumerate() {
            p.set_observer_config(class.config)?;
            // Refresh the flow the valid PTB quotes (flow timeout 120 s).
            run_once(&mut p, PROG_TC_EGRESS, &quoted_flow_frame(), 1);
            for (pi, (prog, floor)) in programs.iter().enumerate() {
                let floor_slot = ci * 2 + usize::from(*floor == PROG_NOOP_TC);
                if class.single {
                    for _ in 0..single_samples {
                        samples[ci * programs.len() + pi].push(run_once(&mut p, prog, &class.frame, 1));
                        if pi < 2 {
                            floors[floor_slot].push(run_once(&mut p, floor, &class.frame, 1));
                        }
                    }
                } else {
                    samples[ci * programs.len() + pi].push(run_once(&mut p, prog, &class.frame, plan.repeat));
                    if pi < 2 {
                        floors[floor_slot].push(run_once(&mut p, floor, &class.frame, plan.repeat));
                    }
                }
                drain(&mut ring);
            }
        }
    }
    let mut rows = Vec::new();
    for (ci, class) in classes.iter().enumerate() {
        for (pi, (prog, floor)) in programs.iter().enumerate() {
            let ns = Stats::of(&samples[ci * programs.len() + pi]);
            let floor_ns = Stats::of(&floors[ci * 2 + usize::from(*floor == PROG_NOOP_TC)]).median;
            rows.push(CostRow {
                program: prog,
                class: class.name,
                ns,
                floor_ns,
                ratio_to_floor: ns.median / floor_ns,
                method: if class.single { "single" } else { "repeat" },
            });
        }
    }
    let mut verified_insns = Vec::new();
    let mut jited_bytes = Vec::new();
    for name in [PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS, PROG_CLAMP_INGRESS, "pmtu_clamp_tc_egress", PROG_NOOP_XDP, PROG_NOOP_TC] {
        let info = p.ebpf_mut().program(name).expect("program").info()?;
        verified_insns.push((name, info.verified_instruction_count().unwrap_or(0)));
        jited_bytes.push((name, info.size_jitted()));
    }
    Ok(ProgCost { repeat: plan.repeat, rounds: plan.rounds, single_samples, rows, verified_insns, jited_bytes })
}

//! pmtu userspace: load and attach the eBPF programs, read their events,
//! aggregate them per destination and render them.
//!
//! The binary (`src/main.rs`) is a thin clap front end; everything here is a
//! library so the integration tests drive the very same code.

pub mod clamp;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod doctor;
pub mod features;
pub mod iface;
pub mod kernel_cache;
pub mod lab;
pub mod learn;
pub mod legacy_tc;
pub mod loader;
pub mod local_addrs;
pub mod metrics;
pub mod pcap;
pub mod pins;
pub mod plan;
pub mod render;
pub mod stop;
pub mod supervisor;
pub mod table;
pub mod trace;

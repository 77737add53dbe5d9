//! (placeholder until the capture lands)
use crate::{clock::WallClock, decode::Ptb, plan::PcapSettings};

pub struct PcapSink;

impl PcapSink {
    pub fn create(_settings: &PcapSettings) -> anyhow::Result<Self> {
        anyhow::bail!("pcap capture is not available in this build")
    }

    pub fn write_ptb(&mut self, _ptb: &Ptb, _clock: &WallClock) -> anyhow::Result<()> {
        Ok(())
    }
}

//! Observed PTBs as a pcap file (`pmtu trace --pcap FILE`): each packet as
//! the observer saw it, with the kernel's timestamp and its first
//! `CAPTURE_BYTES` bytes, in a file `tcpdump -r` and `tshark -r` read.
//!
//! One link type for the whole file, LINKTYPE_RAW (101: the packet starts
//! with its IPv4 or IPv6 header), because one trace mixes hooks that see an
//! Ethernet header (XDP, tc on Ethernet) with hooks that see none (tc on
//! tun, WireGuard, PPP, IP tunnels), interfaces come and go while it runs,
//! and a classic pcap file has one link type. The Ethernet header and any
//! 802.1Q/802.1ad tags are cut off here, in userspace (the kernel copies
//! the frame from its first byte). pcapng could keep both link types, one
//! interface block each, but libpcap, and so tcpdump, refuses a pcapng
//! file whose interfaces differ in link type; what is lost, MAC addresses
//! and VLAN tags, says nothing about a PTB, and the interface is in the
//! event pmtu prints.
//!
//! Nanosecond timestamps (the kernel's `bpf_ktime_get_ns`, moved to wall
//! clock with [`WallClock`]). Rotation by size: when a record would take
//! the file past `max_bytes`, FILE becomes FILE.1, FILE.1 becomes FILE.2,
//! ... up to FILE.`keep` (the oldest is dropped), and a new FILE starts
//! with its own header.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use pmtu_common::{
    event::CAPTURE_BYTES,
    parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, MAX_VLAN_TAGS},
};

use crate::{
    clock::WallClock,
    decode::{CaptureLink, Ptb},
};

pub use crate::plan::{DEFAULT_PCAP_KEEP, DEFAULT_PCAP_MAX_BYTES, PcapSettings};

/// The least `max_bytes`: a file holds its header and at least a dozen
/// records of the largest size.
pub const MIN_PCAP_MAX_BYTES: u64 = 4096;

/// The pcap file header's size, and each record's header.
const FILE_HEADER: u64 = 24;
const RECORD_HEADER: u64 = 16;
/// The file header's snapshot length. Records hold at most CAPTURE_BYTES,
/// but readers (pcap-file's among them) refuse a record whose original
/// length exceeds the snapshot length, so this is libpcap's own maximum
/// (what `tcpdump -w` writes), and longer originals are written as this.
const SNAPLEN: u32 = 262_144;

/// A pcap file being written, rotated by size.
pub struct PcapSink {
    settings: PcapSettings,
    /// The current file, unbuffered: each record goes to the kernel in one
    /// write as it comes (PTBs are few, and rate-limited in the kernel), so
    /// a reader sees it at once and nothing waits for a flush. pcap-file's
    /// PcapWriter encodes the records (see [`encode`]); it does not hold
    /// the file because it gives the writer under it back only by value.
    file: File,
    /// Bytes in the current file, its header included.
    size: u64,
    /// A regular file (or none yet): one that can be renamed and rotated.
    /// A FIFO or a device (`--pcap /dev/stdout`) is written without limit.
    rotatable: bool,
}

impl PcapSink {
    /// Opens `settings.path` for writing. A non-empty regular file already
    /// there is rotated out first, to path.1, so a restarted pmtu does not
    /// overwrite what the last one wrote (with `keep` 0 it is replaced).
    pub fn create(settings: &PcapSettings) -> anyhow::Result<Self> {
        if settings.max_bytes < MIN_PCAP_MAX_BYTES {
            bail!("a pcap file of at most {} bytes is too small: at least {MIN_PCAP_MAX_BYTES}", settings.max_bytes);
        }
        let path = &settings.path;
        let (rotatable, existing) = match fs::metadata(path) {
            Ok(meta) => (meta.is_file(), meta.is_file() && meta.len() > 0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (true, false),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("pcap file {}", path.display()))),
        };
        if existing {
            shift(path, settings.keep)?;
        }
        let file = open(path)?;
        Ok(Self { settings: settings.clone(), file, size: FILE_HEADER, rotatable })
    }

    pub fn path(&self) -> &Path {
        &self.settings.path
    }

    /// Writes one packet seen at `ts`: `data` is its first bytes as the
    /// hook saw them (`link`), `orig_len` its whole length. An Ethernet
    /// frame is written from its IP header on (see the module comment);
    /// at most CAPTURE_BYTES of the packet are written.
    pub fn write(&mut self, ts: SystemTime, data: &[u8], orig_len: u32, link: CaptureLink) -> anyhow::Result<()> {
        let (packet, orig_len) = ip_packet(data, orig_len, link)?;
        let packet = &packet[..packet.len().min(CAPTURE_BYTES)];
        let timestamp = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        let orig_len = orig_len.clamp(packet.len() as u32, SNAPLEN);
        let record = encode(&PcapPacket::new(timestamp, orig_len, packet))
            .with_context(|| format!("a record for {}", self.settings.path.display()))?;
        let len = record.len() as u64;
        if self.rotatable && self.size > FILE_HEADER && self.size + len > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&record).with_context(|| format!("writing {}", self.settings.path.display()))?;
        self.size += len;
        Ok(())
    }

    /// Writes the packet of `ptb`, if it carries one (`Ptb::capture`):
    /// whether it did.
    pub fn write_ptb(&mut self, ptb: &Ptb, clock: &WallClock) -> anyhow::Result<bool> {
        let Some(cap) = &ptb.capture else {
            return Ok(false);
        };
        self.write(clock.wall(ptb.ts_ns), &cap.data, cap.orig_len, cap.link)?;
        Ok(true)
    }

    /// Records go to the kernel as they are written; this flushes whatever
    /// the file itself might buffer (nothing, for a file).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.file.flush().with_context(|| format!("writing {}", self.settings.path.display()))
    }

    /// FILE to FILE.1 (and so on), and a new FILE.
    fn rotate(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        let path = &self.settings.path;
        shift(path, self.settings.keep)?;
        self.file = open(path)?;
        self.size = FILE_HEADER;
        Ok(())
    }
}

/// `pmtu trace --pcap`: the sink and its failure policy. A write that
/// fails is said on stderr at once and ends the writing (the trace goes
/// on); [`PcapOutput::finish`] returns it, so pmtu exits with status 1.
pub struct PcapOutput {
    sink: Option<PcapSink>,
    path: PathBuf,
    failure: Option<anyhow::Error>,
    written: u64,
    /// Events whose packet the kernel could not copy (`cap_len` 0).
    without_packet: u64,
}

impl PcapOutput {
    pub fn create(settings: &PcapSettings) -> anyhow::Result<Self> {
        Ok(Self {
            sink: Some(PcapSink::create(settings)?),
            path: settings.path.clone(),
            failure: None,
            written: 0,
            without_packet: 0,
        })
    }

    /// Writes `ptb`'s packet.
    pub fn record(&mut self, ptb: &Ptb, clock: &WallClock) {
        let Some(sink) = &mut self.sink else {
            return;
        };
        match sink.write_ptb(ptb, clock) {
            Ok(true) => self.written += 1,
            Ok(false) => self.without_packet += 1,
            Err(e) => self.fail(e),
        }
    }

    fn flush(&mut self) {
        if let Some(sink) = &mut self.sink
            && let Err(e) = sink.flush()
        {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: anyhow::Error) {
        eprintln!("pmtu: error: {e:#}; no more packets are written to {}", self.path.display());
        self.sink = None;
        self.failure = Some(e);
    }

    /// Flushes, says how many packets went to the file, and returns the
    /// failure that ended the writing, if one did.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.flush();
        eprintln!("pmtu: {} packet(s) written to {}", self.written, self.path.display());
        if self.without_packet > 0 {
            eprintln!("pmtu: {} event(s) came without their packet (the kernel could not copy it)", self.without_packet);
        }
        self.failure.map_or(Ok(()), Err)
    }
}

/// The name of rotated file `n` of `path`: `path.n`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// path.(keep-1) → path.keep, ..., path → path.1; with `keep` 0, `path` is
/// removed. The oldest, path.keep, is replaced.
fn shift(path: &Path, keep: u32) -> anyhow::Result<()> {
    if keep == 0 {
        return fs::remove_file(path).with_context(|| format!("removing {} to start it anew", path.display()));
    }
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        match fs::rename(&from, rotated(path, n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("rotating {}", from.display()))),
        }
    }
    fs::rename(path, rotated(path, 1)).with_context(|| format!("rotating {}", path.display()))
}

/// The file header: LINKTYPE_RAW, nanoseconds, this machine's byte order.
fn header() -> PcapHeader {
    PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::native(),
        ..Default::default()
    }
}

/// A new pcap file at `path`, its header written.
fn open(path: &Path) -> anyhow::Result<File> {
    let mut file = File::create(path).with_context(|| format!("creating pcap file {}", path.display()))?;
    let mut bytes = Vec::with_capacity(FILE_HEADER as usize);
    header().write_to(&mut bytes).with_context(|| format!("a header for {}", path.display()))?;
    file.write_all(&bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// One record (its 16-byte header and data) as pcap-file writes it after
/// [`header`]: PcapWriter writes into a Vec here, and the file header it
/// starts with is cut off.
fn encode(packet: &PcapPacket) -> Result<Vec<u8>, pcap_file::PcapError> {
    let capacity = (FILE_HEADER + RECORD_HEADER) as usize + packet.data.len();
    let mut w = PcapWriter::with_header(Vec::with_capacity(capacity), header())?;
    w.write_packet(packet)?;
    let mut bytes = w.into_writer();
    bytes.drain(..FILE_HEADER as usize);
    Ok(bytes)
}

/// The IP packet in `data` and its original length: all of it on an L3
/// link; after the Ethernet header and up to MAX_VLAN_TAGS tags on
/// Ethernet, whose EtherType must then be IPv4 or IPv6 (the observer
/// parsed it as one).
pub fn ip_packet(data: &[u8], orig_len: u32, link: CaptureLink) -> anyhow::Result<(&[u8], u32)> {
    let ip = match link {
        CaptureLink::L3 => data,
        CaptureLink::Ethernet => {
            let ethertype = |at: usize| data.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            let mut offset = 14;
            let mut ether = ethertype(12);
            let mut tags = 0;
            while tags < MAX_VLAN_TAGS && matches!(ether, Some(ETH_P_8021Q | ETH_P_8021AD)) {
                ether = ethertype(offset + 2);
                offset += 4;
                tags += 1;
            }
            match ether {
                Some(ETH_P_IP | ETH_P_IPV6) if data.len() > offset => &data[offset..],
                Some(other) => bail!("captured frame of EtherType {other:#06x} after {tags} tag(s), not IP"),
                None => bail!("captured frame of {} bytes ends in its Ethernet header", data.len()),
            }
        }
    };
    let header = (data.len() - ip.len()) as u32;
    Ok((ip, orig_len.saturating_sub(header)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcap_file::pcap::PcapReader;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pmtu-pcap-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// An IPv4 header's first bytes, then `n` more.
    fn v4(n: usize) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0x02, 0x4c];
        p.resize(4 + n, 0xab);
        p
    }

    fn eth(ethertype: u16, tags: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0, 7]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn read(path: &Path) -> (PcapHeader, Vec<PcapPacket<'static>>) {
        let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
        let mut packets = Vec::new();
        while let Some(p) = r.next_packet() {
            packets.push(p.unwrap().into_owned());
        }
        (r.header(), packets)
    }

    fn settings(path: &Path, max_bytes: u64, keep: u32) -> PcapSettings {
        PcapSettings { path: path.to_path_buf(), max_bytes, keep }
    }

    #[test]
    fn records_read_back_as_raw_ip_with_their_times_and_lengths() {
        let d = dir("read-back");
        let path = d.join("ptb.pcap");
        let mut sink = PcapSink::create(&settings(&path, DEFAULT_PCAP_MAX_BYTES, 2)).unwrap();
        let t0 = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let packet = v4(252);
        sink.write(t0, &packet, 576, CaptureLink::L3).unwrap();
        // The same packet in an Ethernet frame, and behind two VLAN tags:
        // cut to the IP header, and the original length with it.
        let frame = eth(ETH_P_IP, &[], &packet[..242]);
        sink.write(t0 + Duration::from_nanos(1), &frame, 590, CaptureLink::Ethernet).unwrap();
        let frame = eth(ETH_P_IP, &[ETH_P_8021AD, ETH_P_8021Q], &packet[..234]);
        sink.write(t0 + Duration::from_secs(1), &frame, 598, CaptureLink::Ethernet).unwrap();
        sink.flush().unwrap();

        let (header, packets) = read(&path);
        assert_eq!(header.datalink, DataLink::RAW);
        assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[0].timestamp, Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(packets[1].timestamp, Duration::new(1_700_000_000, 123_456_790));
        assert_eq!(packets[2].timestamp, Duration::new(1_700_000_001, 123_456_789));
        assert_eq!((packets[0].orig_len, &packets[0].data[..]), (576, &packet[..]));
        assert_eq!((packets[1].orig_len, &packets[1].data[..]), (576, &packet[..242]));
        assert_eq!((packets[2].orig_len, &packets[2].data[..]), (576, &packet[..234]));
        assert_eq!(fs::metadata(&path).unwrap().len(), 24 + 3 * 16 + 256 + 242 + 234);
    }

    #[test]
    fn a_ptb_is_written_at_its_wall_clock_time() {
        let d = dir("ptb");
        let path = d.join("ptb.pcap");
        let mut sink = PcapSink::create(&settings(&path, DEFAULT_PCAP_MAX_BYTES, 0)).unwrap();
        let mut ptb = crate::decode::decode_event(&{
            let mut ev = pmtu_common::event::PtbEvent::zeroed();
            ev.family = 6;
            ev.ts_ns = 5_000_000_007;
            ev
        })
        .unwrap();
        let clock = WallClock::with_offset_ns(1_000_000_000_000_000_000);
        assert!(!sink.write_ptb(&ptb, &clock).unwrap(), "no capture, nothing written");
        let packet = {
            let mut p = vec![0x60; 1];
            p.resize(200, 0);
            p
        };
        ptb.capture = Some(crate::decode::Capture { link: CaptureLink::Ethernet, orig_len: 214, data: eth(ETH_P_IPV6, &[], &packet) });
        assert!(sink.write_ptb(&ptb, &clock).unwrap());
        sink.flush().unwrap();
        let (_, packets) = read(&path);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].timestamp, Duration::new(1_000_000_005, 7));
        assert_eq!((packets[0].orig_len, packets[0].data.len()), (200, 200));
    }

    #[test]
    fn rotation_keeps_each_file_within_max_bytes_and_keeps_keep() {
        let d = dir("rotate");
        let path = d.join("ptb.pcap");
        let max = MIN_PCAP_MAX_BYTES;
        let mut sink = PcapSink::create(&settings(&path, max, 2)).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // 272 bytes a record: 14 fit after the header (24 + 14 * 272 =
        // 3832), the 15th would make 4104.
        let per_file = 14;
        let total = per_file * 4 + 3;
        for i in 0..total {
            sink.write(t0 + Duration::from_secs(i as u64), &v4(252), 1500, CaptureLink::L3).unwrap();
        }
        sink.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["ptb.pcap", "ptb.pcap.1", "ptb.pcap.2"], "keep 2: the oldest two files went");
        for name in &names {
            let len = fs::metadata(d.join(name)).unwrap().len();
            assert!(len <= max, "{name}: {len} bytes");
        }
        // Newest in FILE, then FILE.1, FILE.2; each with a header of its own.
        let first_second = |name: &str| {
            let (header, packets) = read(&d.join(name));
            assert_eq!(header.datalink, DataLink::RAW);
            (packets.len(), packets[0].timestamp.as_secs() - 1_700_000_000)
        };
        assert_eq!(first_second("ptb.pcap"), (3, (per_file * 4) as u64));
        assert_eq!(first_second("ptb.pcap.1"), (per_file, (per_file * 3) as u64));
        assert_eq!(first_second("ptb.pcap.2"), (per_file, (per_file * 2) as u64));
        assert_eq!(fs::metadata(d.join("ptb.pcap.1")).unwrap().len(), 24 + per_file as u64 * 272);
    }

    #[test]
    fn keep_zero_starts_the_file_anew_and_a_restart_rotates_the_old_one_out() {
        let d = dir("keep0");
        let path = d.join("ptb.pcap");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut sink = PcapSink::create(&settings(&path, MIN_PCAP_MAX_BYTES, 0)).unwrap();
        for _ in 0..20 {
            sink.write(t, &v4(252), 1500, CaptureLink::L3).unwrap();
        }
        sink.flush().unwrap();
        drop(sink);
        assert_eq!(read(&path).1.len(), 20 - 14);
        assert!(!rotated(&path, 1).exists());

        // Started again with keep 1: the last run's file is kept as FILE.1.
        let mut sink = PcapSink::create(&settings(&path, MIN_PCAP_MAX_BYTES, 1)).unwrap();
        sink.write(t, &v4(10), 1500, CaptureLink::L3).unwrap();
        sink.flush().unwrap();
        assert_eq!(read(&rotated(&path, 1)).1.len(), 6);
        assert_eq!(read(&path).1.len(), 1);
    }

    #[test]
    fn frames_that_are_not_ip_or_too_short_are_errors() {
        assert!(ip_packet(&eth(0x0806, &[], &[0; 28]), 42, CaptureLink::Ethernet).is_err(), "ARP");
        assert!(ip_packet(&[0; 13], 60, CaptureLink::Ethernet).is_err());
        assert!(ip_packet(&eth(ETH_P_IP, &[], &[]), 14, CaptureLink::Ethernet).is_err(), "no IP byte at all");
        // Three tags: more than the observer walks.
        let three = eth(ETH_P_IP, &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], &v4(20));
        assert!(ip_packet(&three, 100, CaptureLink::Ethernet).is_err());
        let packet = v4(20);
        let (ip, len) = ip_packet(&packet, 24, CaptureLink::L3).unwrap();
        assert_eq!((ip.len(), len), (24, 24));
    }

    #[test]
    fn too_small_a_limit_is_refused() {
        let d = dir("small");
        let err = PcapSink::create(&settings(&d.join("x.pcap"), 1000, 1)).err().unwrap();
        assert!(err.to_string().contains("at least 4096"), "{err}");
    }
}

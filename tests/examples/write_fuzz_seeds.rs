//! Writes the fuzz seed corpus (fuzz/corpus/<target>/) from the test frame
//! corpora. Run after the corpora change:
//! `cargo run -p pmtu-tests --example write_fuzz_seeds`.

use std::{fs, path::PathBuf};

use pmtu_common::{
    event::{CAPTURE_BYTES, CAPTURE_LINK_ETHERNET, CapturedPtb, PtbEvent},
    parse::{Link, Outcome, SlicePacket, parse_ptb},
};
use pmtu_tests::{cases::corpus, clamp_cases::clamp_corpus};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    fs::write(dir.join(file), data).expect("seed file");
}

fn main() {
    let mut records = Vec::new();
    for case in corpus() {
        write("parse_frame", &case.name, &case.frame);
        let mut ev = PtbEvent::zeroed();
        if parse_ptb(&SlicePacket(&case.frame), Link::Ethernet, &mut ev) == Outcome::Ptb {
            ev.ts_ns = 1_000_000_000 * (records.len() as u64 / 104 + 1);
            write("ring_record", &case.name, bytemuck::bytes_of(&ev));
            records.extend_from_slice(bytemuck::bytes_of(&ev));
            // The same event with its frame, as `pmtu trace --pcap` has it.
            let cap = case.frame.len().min(CAPTURE_BYTES);
            let mut rec = CapturedPtb {
                event: ev,
                pkt_len: case.frame.len() as u32,
                cap_len: cap as u16,
                link: CAPTURE_LINK_ETHERNET,
                _pad: 0,
                data: [0; CAPTURE_BYTES],
            };
            rec.data[..cap].copy_from_slice(&case.frame[..cap]);
            write("ring_record", &format!("captured {}", case.name), bytemuck::bytes_of(&rec));
        }
    }
    for case in clamp_corpus() {
        write("parse_frame", &format!("clamp {}", case.name), &case.frame);
    }
    // mss_rewrite: control bytes (family, framing, flags, clamp), then options.
    for (name, control, options) in [
        ("v4 Linux layout", [0x00u8, 0x05, 0x50], vec![2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]),
        ("v6 odd offset vlan", [0x13, 0x05, 0x50], vec![1, 2, 4, 5, 0xa0, 1, 1, 1]),
        ("v4 no mss AE l3", [0x18, 0x03, 0xe8], vec![4, 2, 1, 1]),
        ("v6 tcp-ao", [0x05, 0x04, 0x00], vec![29, 16, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 2, 4, 5, 0xb4]),
        ("v4 two mss qinq", [0x06, 0x04, 0x00], vec![2, 4, 5, 0xb4, 2, 4, 5, 0x78]),
    ] {
        write("mss_rewrite", name, &[&control[..], &options[..]].concat());
    }
    write("table_ops", "all records", &records);
    write("table_ops", "records and expiries", &[&records[..208], &[200u8; 7][..], &records[208..416]].concat());
    write("table_ops", "one destination over and over", &records[..104].repeat(20));
    for (name, line) in [
        ("trace", "trace\0-i\0eth0\0--json\0--duration\x002.5"),
        ("trace all", "trace\0-i\0eth0\0-i\0eth1\0--hook\0tc\0--expires\060\0--max-destinations\0100\0--accept-unvalidated\0--rate-per-reporter\00\0--ring-kib\064"),
        ("trace pcap", "trace\0-i\0eth0\0--pcap\0/tmp/p.pcap\0--pcap-max-bytes\08M\0--pcap-keep\02"),
        ("clamp", "clamp\0-i\0eth0\0--set-mss\01200\0--json"),
        ("clamp pmtu", "clamp\0-i\0eth0\0--to-pmtu\0--duration\01"),
        ("bad", "trace\0--duration\0-1\0-i"),
    ] {
        write("cli_args", name, line.as_bytes());
    }
    write("config_file", "example", include_bytes!("../../contrib/pmtu.toml"));
    for (name, text) in [
        ("minimal", "[[interface]]\nname = \"eth0\"\nclamp = \"to-pmtu\"\n"),
        ("set-mss", "on-exit = \"detach\"\n[[interface]]\nname = \"ppp*\"\nclamp = \"set-mss\"\nmss = 1400\ntrace = true\nhook = \"xdp\"\n"),
        ("unknown key", "[[interface]]\nname = \"eth0\"\nclampp = 1\n"),
        ("bad value", "ring-kib = 100\n[[interface]]\nname = \"eth0\"\nclamp = \"to-pmtu\"\n"),
        ("garbage", "[[interface\nname = = \"\n"),
    ] {
        write("config_file", name, text.as_bytes());
    }
    println!("seed corpus written under fuzz/corpus/");
}

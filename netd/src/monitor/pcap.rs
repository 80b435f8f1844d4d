//! `netd monitor --pcap FILE`: the captured bytes of each event, as the
//! classic pcap format tcpdump and Wireshark read (Ethernet link type).

use std::io::{self, Write};

use super::Record;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// The most an event carries (netd_common::events::CAPTURE_BYTES), with room.
const SNAPLEN: u32 = 65_535;

pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&MAGIC_MICROS.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&SNAPLEN.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        out.flush()?;
        Ok(Self { out })
    }

    /// One packet record: its time, its captured bytes and its length.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = record.bytes();
        let secs = (record.time_ns / 1_000_000_000) as u32;
        let micros = ((record.time_ns / 1_000) % 1_000_000) as u32;
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&micros.to_le_bytes())?;
        self.out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&record.len.max(bytes.len() as u32).to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_its_header_then_one_record_per_packet() {
        let record = Record {
            time_ns: 1_700_000_000_123_456_789,
            kind: "drop".into(),
            hook: "tc_endpoint".into(),
            reason: Some("isolation".into()),
            verdict: None,
            rule: None,
            service: None,
            backend: None,
            ifindex: 3,
            endpoint: None,
            network: None,
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            len: 98,
            packet: "aabbcc".into(),
        };
        let mut file = Vec::new();
        let mut w = PcapWriter::new(&mut file).expect("header");
        w.write(&record).expect("record");
        assert_eq!(file.len(), 24 + 16 + 3);
        assert_eq!(&file[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(file[20..24].try_into().expect("4")), 1);
        let rec = &file[24..];
        assert_eq!(
            u32::from_le_bytes(rec[0..4].try_into().expect("4")),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(rec[4..8].try_into().expect("4")),
            123_456
        );
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().expect("4")), 3);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().expect("4")), 98);
        assert_eq!(&rec[16..], &[0xaa, 0xbb, 0xcc]);
    }
}

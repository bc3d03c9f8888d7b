//! `vsctl capture`: filter translation and the classic pcap writer.

use std::io::{self, Write};

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// Magic of nanosecond-resolution classic pcap.
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// Writes a classic libpcap file (nanosecond timestamps, Ethernet).
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W, snaplen: u32) -> io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    pub fn packet(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h.extend_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Lowercase or uppercase hex to bytes.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Turns a small tcpdump-like expression into the flow match syntax the daemon
/// takes. Words: `ip`, `ip6`, `arp`, `icmp`, `icmp6`, `tcp`, `udp`, `src host A`,
/// `dst host A`, `src port N`, `dst port N`, joined by `and`. Anything with `=` or
/// `,` is taken as flow syntax as it is. `host`/`port` without `src`/`dst` (an
/// "or" of two fields) is refused.
pub fn translate_filter(expr: &str) -> Result<String, String> {
    let expr = expr.trim();
    if expr.contains('=') || expr.contains(',') {
        return Ok(expr.to_string());
    }
    let words: Vec<&str> = expr.split_whitespace().collect();
    let mut proto: Option<&str> = None;
    let mut fields: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        match w {
            "and" | "&&" => {}
            "ip" | "ip6" | "arp" | "icmp" | "icmp6" | "tcp" | "udp" | "sctp" => {
                if proto.is_some_and(|p| p != "ip" && p != "ip6") && w != "ip" {
                    return Err(format!(
                        "filter: two protocols ({} and {w})",
                        proto.unwrap_or("")
                    ));
                }
                if proto.is_none() || proto == Some("ip") {
                    proto = Some(w);
                }
            }
            "src" | "dst" => {
                let what = words.get(i + 1).copied().unwrap_or("");
                let val = words.get(i + 2).copied().unwrap_or("");
                if val.is_empty() {
                    return Err(format!("filter: '{w} {what}' needs a value"));
                }
                match what {
                    "host" => {
                        let f = if w == "src" { "nw_src" } else { "nw_dst" };
                        proto.get_or_insert("ip");
                        fields.push(format!("{f}={val}"));
                    }
                    "port" => {
                        let f = if w == "src" { "tp_src" } else { "tp_dst" };
                        if proto.is_none_or(|p| p == "ip") {
                            return Err("filter: a port needs tcp, udp or sctp first".into());
                        }
                        fields.push(format!("{f}={val}"));
                    }
                    _ => return Err(format!("filter: '{w}' must be followed by host or port")),
                }
                i += 2;
            }
            "host" | "port" => {
                return Err(format!(
                    "filter: '{w}' alone means source or destination, which a flow match cannot say; use 'src {w}' or 'dst {w}', or flow syntax"
                ));
            }
            _ => {
                return Err(format!(
                    "filter: unknown word '{w}' (see docs/operations.md)"
                ));
            }
        }
        i += 1;
    }
    let mut out: Vec<String> = proto.map(str::to_string).into_iter().collect();
    out.extend(fields);
    if out.is_empty() {
        return Err("filter: empty".into());
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(translate_filter("icmp").as_deref(), Ok("icmp"));
        assert_eq!(
            translate_filter("udp and dst port 53").as_deref(),
            Ok("udp,tp_dst=53")
        );
        assert_eq!(
            translate_filter("tcp and src host 10.0.0.1").as_deref(),
            Ok("tcp,nw_src=10.0.0.1")
        );
        assert_eq!(
            translate_filter("src host 10.0.0.1").as_deref(),
            Ok("ip,nw_src=10.0.0.1")
        );
        assert_eq!(
            translate_filter("udp,tp_dst=53").as_deref(),
            Ok("udp,tp_dst=53")
        );
        assert!(translate_filter("host 1.2.3.4").is_err());
        assert!(translate_filter("bogus").is_err());
        assert!(translate_filter("dst port 80").is_err());
    }

    #[test]
    fn pcap_header_and_record() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf, 1600).expect("header");
        w.packet(1_500_000_000_123, 60, &[1, 2, 3]).expect("packet");
        assert_eq!(buf.len(), 24 + 16 + 3);
        assert_eq!(&buf[..4], &MAGIC_NS.to_le_bytes());
        assert_eq!(&buf[24..28], &1500u32.to_le_bytes());
        assert_eq!(&buf[28..32], &123u32.to_le_bytes());
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
    }
}

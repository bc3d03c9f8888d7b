//! Packet formats, smoltcp style: zero-copy views over byte slices, checked once, after
//! which no accessor can panic. Untrusted bytes give `Err`, never a panic.

pub mod ethernet;
pub mod mac;

pub use ethernet::{EtherType, EthernetFrame};
pub use mac::MacAddr;

/// Why a frame could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Runt(usize),
    #[error("VLAN tag truncated")]
    TruncatedVlan,
}

/// What the switch needs to know about a frame to forward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// 802.1Q VLAN id, if the frame carries a tag.
    pub vlan: Option<u16>,
    /// EtherType of the payload (after any VLAN tag).
    pub ethertype: EtherType,
    /// Offset of the L3 header.
    pub l3_offset: usize,
}

/// Parses the L2 header of a frame.
#[inline]
pub fn parse(frame: &[u8]) -> Result<ParsedFrame, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let mut ethertype = eth.ethertype();
    let mut l3_offset = ethernet::HEADER_LEN;
    let mut vlan = None;
    if ethertype == EtherType::VLAN {
        let tag = frame
            .get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN)
            .ok_or(WireError::TruncatedVlan)?;
        vlan = Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
        ethertype = EtherType(u16::from_be_bytes([tag[2], tag[3]]));
        l3_offset += ethernet::VLAN_TAG_LEN;
    }
    Ok(ParsedFrame {
        dst: eth.dst(),
        src: eth.src(),
        vlan,
        ethertype,
        l3_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, // eth
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    #[test]
    fn parses_untagged() {
        let p = parse(&ARP_REQUEST).expect("parse");
        assert!(p.dst.is_broadcast());
        assert_eq!(p.src, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.ethertype, EtherType::ARP);
        assert_eq!(p.vlan, None);
        assert_eq!(p.l3_offset, 14);
    }

    #[test]
    fn parses_vlan_tag() {
        let mut f = ARP_REQUEST[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x08, 0x00]);
        let p = parse(&f).expect("parse");
        assert_eq!(p.vlan, Some(10));
        assert_eq!(p.ethertype, EtherType::IPV4);
        assert_eq!(p.l3_offset, 18);
        assert_eq!(parse(&f[..16]), Err(WireError::TruncatedVlan));
    }

    #[test]
    fn runts_are_errors() {
        for n in 0..14 {
            assert_eq!(parse(&ARP_REQUEST[..n]), Err(WireError::Runt(n)));
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse(&bytes);
        }
    }
}

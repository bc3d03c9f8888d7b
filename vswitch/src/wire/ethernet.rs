//! Ethernet II header view.

use super::{MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Length of the Ethernet header without VLAN tags.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// Length of one 802.1Q tag (TPID is the outer EtherType; this is TCI + inner type).
pub const VLAN_TAG_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: EtherType = EtherType(0x0800);
    pub const ARP: EtherType = EtherType(0x0806);
    pub const VLAN: EtherType = EtherType(0x8100);
    pub const IPV6: EtherType = EtherType(0x86dd);
}

/// A checked view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer after checking it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Runt(len));
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    fn mac_at(&self, r: std::ops::Range<usize>) -> MacAddr {
        let b = &self.buffer.as_ref()[r];
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        self.mac_at(field::DESTINATION)
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        self.mac_at(field::SOURCE)
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.0.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_read_back() {
        let mut buf = [0u8; 20];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).expect("long enough");
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([2, 0, 0, 0, 0, 9]));
        f.set_ethertype(EtherType::IPV6);
        let f = EthernetFrame::new_checked(&buf[..]).expect("long enough");
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(f.ethertype(), EtherType::IPV6);
        assert_eq!(f.payload().len(), 6);
    }
}

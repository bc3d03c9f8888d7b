//! PLACEHOLDER (L2 only) until the full extractor lands from its branch.
use super::field::Field;
use super::key::{Key, VLAN_PRESENT};

#[derive(Debug, Clone, Copy, Default)]
pub struct Offsets {
    pub l3: u16,
    pub l4: u16,
}

#[derive(Debug)]
pub struct ExtractError;

pub fn extract(frame: &[u8], in_port: u32, key: &mut Key) -> Result<Offsets, ExtractError> {
    if frame.len() < 14 {
        return Err(ExtractError);
    }
    let mac = |b: &[u8]| b.iter().fold(0u128, |a, &x| (a << 8) | u128::from(x));
    Field::InPort.set(key, u128::from(in_port));
    Field::EthDst.set(key, mac(&frame[0..6]));
    Field::EthSrc.set(key, mac(&frame[6..12]));
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    let mut l3 = 14;
    if et == 0x8100 && frame.len() >= 18 {
        let tci = u16::from_be_bytes([frame[14], frame[15]]);
        Field::VlanTci.set(key, u128::from(tci | VLAN_PRESENT));
        et = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    Field::EthType.set(key, u128::from(et));
    Ok(Offsets { l3, l4: 0 })
}

//! AF_PACKET ports (being written).
use super::{PortAttachment, PortError};
use vswitch_proto::PortMode;
pub struct PacketPort;
impl PacketPort {
    pub fn open(name: &str) -> Result<(PacketPort, PortAttachment), PortError> {
        Err(PortError::Unsupported {
            name: name.into(),
            mode: PortMode::Packet,
            reason: "not yet".into(),
        })
    }
}
impl super::Port for PacketPort {
    fn rx_batch(
        &mut self,
        _: &mut crate::pool::FramePool,
        _: &mut Vec<crate::pool::Frame>,
        _: usize,
    ) -> usize {
        0
    }
    fn tx_batch(
        &mut self,
        _: &mut crate::pool::FramePool,
        _: &mut Vec<crate::pool::Frame>,
    ) -> super::TxOutcome {
        Default::default()
    }
    fn maintain(&mut self, _: &mut crate::pool::FramePool) {}
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

//! AF_XDP ports (being written).
use super::{PortAttachment, PortError};
use vswitch_proto::PortMode;
pub struct AfXdpPort;
impl AfXdpPort {
    pub fn open(
        name: &str,
        mode: PortMode,
        _umem: &xsk_rs::Umem,
        _port_no: u32,
    ) -> Result<(AfXdpPort, PortAttachment), PortError> {
        Err(PortError::Unsupported {
            name: name.into(),
            mode,
            reason: "not yet".into(),
        })
    }
}
impl super::Port for AfXdpPort {
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

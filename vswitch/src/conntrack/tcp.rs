//! The TCP connection state machine (as Linux's nf_conntrack_proto_tcp, without
//! sequence-window tracking): which state a segment moves a connection to, and
//! which segments fit no state (`+inv`).

use super::config::Timeouts;

/// TCP flag bits as in the header's low byte.
pub mod flags {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const ACK: u16 = 0x10;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    /// One side sent FIN.
    FinWait,
    /// The other side acknowledged the first FIN; it may still send.
    CloseWait,
    /// Both sides sent FIN.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }

    pub fn timeout_s(self, t: &Timeouts) -> u32 {
        match self {
            TcpState::SynSent => t.tcp_syn_sent,
            TcpState::SynRecv => t.tcp_syn_recv,
            TcpState::Established => t.tcp_established,
            TcpState::FinWait => t.tcp_fin_wait,
            TcpState::CloseWait => t.tcp_close_wait,
            TcpState::TimeWait => t.tcp_time_wait,
            TcpState::Close => t.tcp_close,
        }
    }
}

/// Flag combinations no valid segment carries.
fn bogus(f: u16) -> bool {
    let syn_fin = f & (flags::SYN | flags::FIN) == flags::SYN | flags::FIN;
    let syn_rst = f & (flags::SYN | flags::RST) == flags::SYN | flags::RST;
    let none = f & (flags::SYN | flags::FIN | flags::RST | flags::ACK) == 0;
    syn_fin || syn_rst || none
}

/// The state a first segment (no connection yet) opens, or `None` (invalid).
/// A plain SYN opens SYN_SENT; a segment with ACK and no SYN/RST is picked up
/// mid-stream as ESTABLISHED (Linux's `tcp_loose`, so a switch restart does not
/// cut live connections).
pub fn open(f: u16) -> Option<TcpState> {
    if bogus(f) {
        return None;
    }
    if f & (flags::SYN | flags::ACK) == flags::SYN {
        return Some(TcpState::SynSent);
    }
    if f & (flags::SYN | flags::RST) == 0 && f & flags::ACK != 0 {
        return Some(TcpState::Established);
    }
    None
}

/// What a segment does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The connection moves to (or stays in) this state.
    To(TcpState),
    /// The segment fits no state: `+inv`, the connection unchanged.
    Invalid,
    /// A new SYN on a closed connection: forget it and start over.
    Reopen,
}

/// Transition for a segment with flags `f` in direction `reply` (false = the
/// direction that opened the connection). `fin_orig`/`fin_reply` say which sides
/// have sent FIN already.
pub fn step(s: TcpState, f: u16, reply: bool, fin_orig: bool, fin_reply: bool) -> Step {
    use TcpState::*;
    if bogus(f) {
        return Step::Invalid;
    }
    let syn = f & flags::SYN != 0;
    let ack = f & flags::ACK != 0;
    if f & flags::RST != 0 {
        return Step::To(Close);
    }
    match s {
        SynSent => match (reply, syn, ack) {
            (false, true, false) => Step::To(SynSent), // retransmission
            (true, true, true) => Step::To(SynRecv),
            (true, true, false) => Step::To(SynRecv), // simultaneous open
            _ => Step::Invalid,
        },
        SynRecv => match (reply, syn, ack) {
            (false, false, true) => Step::To(Established),
            (true, true, true) => Step::To(SynRecv), // SYN-ACK retransmission
            (false, true, false) => Step::To(SynRecv),
            (true, false, true) => Step::To(SynRecv),
            _ => Step::Invalid,
        },
        Established | FinWait | CloseWait => {
            if syn {
                // A SYN (or SYN-ACK retransmission) on an open connection.
                return if s == Established && reply && ack {
                    Step::To(Established)
                } else {
                    Step::Invalid
                };
            }
            let fin = f & flags::FIN != 0;
            let (fo, fr) = (fin_orig || (fin && !reply), fin_reply || (fin && reply));
            if fo && fr {
                Step::To(TimeWait)
            } else if fo || fr {
                // The peer of the FIN sender acknowledging it: half closed.
                let peer_acks = ack && !fin && ((fo && reply) || (fr && !reply));
                if peer_acks || s == CloseWait {
                    Step::To(CloseWait)
                } else {
                    Step::To(FinWait)
                }
            } else {
                Step::To(Established)
            }
        }
        TimeWait | Close => {
            if syn && !ack && !reply {
                Step::Reopen
            } else if syn {
                Step::Invalid
            } else {
                Step::To(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    #[test]
    fn three_way_handshake_and_close() {
        let s = open(SYN).expect("syn opens");
        assert_eq!(s, TcpState::SynSent);
        let Step::To(s) = step(s, SYN | ACK, true, false, false) else {
            panic!("syn-ack")
        };
        assert_eq!(s, TcpState::SynRecv);
        let Step::To(s) = step(s, ACK, false, false, false) else {
            panic!("ack")
        };
        assert_eq!(s, TcpState::Established);
        let Step::To(s) = step(s, FIN | ACK, false, false, false) else {
            panic!("fin")
        };
        assert_eq!(s, TcpState::FinWait);
        let Step::To(s) = step(s, ACK, true, true, false) else {
            panic!("ack of fin")
        };
        assert_eq!(s, TcpState::CloseWait);
        let Step::To(s) = step(s, FIN | ACK, true, true, false) else {
            panic!("fin 2")
        };
        assert_eq!(s, TcpState::TimeWait);
        assert_eq!(step(s, SYN, false, true, true), Step::Reopen);
    }

    #[test]
    fn invalid_segments() {
        assert_eq!(open(SYN | FIN), None);
        assert_eq!(open(RST), None);
        assert_eq!(open(SYN | ACK), None);
        assert_eq!(open(0), None);
        assert_eq!(open(ACK), Some(TcpState::Established));
        assert_eq!(
            step(TcpState::SynSent, ACK, false, false, false),
            Step::Invalid
        );
        assert_eq!(
            step(TcpState::Established, SYN, false, false, false),
            Step::Invalid
        );
        assert_eq!(
            step(TcpState::Established, RST | ACK, true, false, false),
            Step::To(TcpState::Close)
        );
    }

    #[test]
    fn every_state_has_a_timeout() {
        let t = Timeouts::default();
        for s in [
            TcpState::SynSent,
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::CloseWait,
            TcpState::TimeWait,
            TcpState::Close,
        ] {
            assert!(s.timeout_s(&t) > 0, "{}", s.name());
        }
    }
}

//! Conntrack sizes and per-state timeouts (`[conntrack]` in the vswitchd TOML).
//!
//! Defaults follow Open vSwitch's userspace conntrack and Linux where they agree;
//! where they differ we take the shorter one, since a userspace table is bounded
//! and a stale entry costs a slot (docs/services.md lists them).

use serde::Deserialize;

/// Per-state timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    /// UDP (and SCTP, other) before a reply was seen.
    pub udp_unreplied: u32,
    /// UDP once both directions were seen.
    pub udp_assured: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 30,
            tcp_syn_recv: 30,
            tcp_established: 86_400,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_time_wait: 30,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_assured: 180,
            icmp: 30,
        }
    }
}

/// `[conntrack]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CtConfig {
    /// Most connections the (shared) table holds.
    pub max_entries: usize,
    pub timeouts: Timeouts,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            max_entries: 1 << 20,
            timeouts: Timeouts::default(),
        }
    }
}

impl CtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=1 << 26).contains(&self.max_entries) {
            return Err(format!(
                "conntrack.max_entries = {} is outside 16..=67108864",
                self.max_entries
            ));
        }
        let t = &self.timeouts;
        let all = [
            t.tcp_syn_sent,
            t.tcp_syn_recv,
            t.tcp_established,
            t.tcp_fin_wait,
            t.tcp_close_wait,
            t.tcp_time_wait,
            t.tcp_close,
            t.udp_unreplied,
            t.udp_assured,
            t.icmp,
        ];
        if all.contains(&0) {
            return Err("conntrack.timeouts: every timeout must be at least 1 s".into());
        }
        Ok(())
    }
}

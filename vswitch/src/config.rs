//! `vswitchd --config FILE`: optional TOML; every key has a built-in default.
//!
//! ```toml
//! [datapath]
//! pool_frames = 16384     # 2 KiB frames per poll worker (its UMEM)
//! idle_spin_us = 200      # keep polling this long after the last frame
//! max_sleep_ms = 10       # longest idle sleep in poll(2)
//! afxdp = true            # false: never create UMEMs (packet mode only)
//! xdp_fastpath = false    # true: in-kernel XDP fast path for cached L2 decisions
//!                         # on pod/gateway AF_XDP ports (port/fastpath.rs)
//!
//! [bridge]
//! mac_aging_s = 300
//! mac_table_size = 8192
//!
//! [conntrack]
//! max_entries = 1048576
//! [conntrack.timeouts]     # seconds (docs/services.md)
//! tcp_syn_sent = 30
//! tcp_syn_recv = 30
//! tcp_established = 86400
//! tcp_fin_wait = 120
//! tcp_close_wait = 60
//! tcp_time_wait = 30
//! tcp_close = 10
//! udp_unreplied = 30
//! udp_assured = 180
//! icmp = 30
//!
//! [metrics]
//! addr = "127.0.0.1:9400"  # Prometheus endpoint; absent: not served
//!
//! [services]
//! maglev_table_size = 16381  # largest Maglev table: a prime in 251..=65521
//! [policy]
//! audit_per_s = 0          # log denied connections, at most this many per second
//!                          # per worker (0: off); RUST_LOG target vswitch::policy_audit
//! [overlay]
//! mode = "vxlan"          # or "flannel": UDP 8472, VNI 1 (flannel's vxlan backend)
//! port = 4789             # VXLAN UDP port (default: 4789, 8472 in flannel mode)
//! vni = 1
//!
//! [uplink]                # ports added with --kind uplink (docs/overlay.md)
//! xdp_filter = "on"       # own XDP program: only VXLAN (the [overlay] port) and
//!                         # NodePort TCP/UDP to the uplink's IPv4 addresses go to
//!                         # the switch, the rest to the host. A failure to load it
//!                         # fails the port. "full-if-unavailable": fall back to
//!                         # libxdp's program, which takes EVERY frame of the queue
//!                         # (the host loses the NIC); "off": always that program.
//! nodeport_range = "30000-32767"  # "none": no NodePort traffic is taken
//! ```

use crate::DatapathConfig;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub datapath: DatapathSection,
    pub bridge: BridgeSection,
    pub conntrack: crate::conntrack::CtConfig,
    pub services: crate::services::realize::ServicesConfig,
    pub overlay: OverlaySection,
    pub uplink: UplinkSection,
    pub metrics: MetricsSection,
    pub policy: PolicySection,
}

/// `[policy]`: NetworkPolicy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Audit log of denied connections: most events per second per worker (0: off).
    pub audit_per_s: u32,
}

/// `[uplink]`: which XDP program an uplink port runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkSection {
    /// `on` (default), `full-if-unavailable` or `off`.
    pub xdp_filter: Option<String>,
    /// `LO-HI` (inclusive) or `none`; default 30000-32767.
    pub nodeport_range: Option<String>,
}

impl UplinkSection {
    /// The program for uplink ports; the VXLAN port is the overlay's.
    pub fn program(&self, vxlan_port: u16) -> Result<crate::port::XdpProgram, String> {
        use crate::port::XdpProgram;
        use crate::port::xdp_filter::FilterParams;
        let nodeports = match self.nodeport_range.as_deref().map(str::trim) {
            None => FilterParams::default().nodeports,
            Some("none") | Some("") => None,
            Some(r) => {
                let bad = || {
                    format!(
                        "uplink.nodeport_range = '{r}' (expected LO-HI, e.g. 30000-32767, or none)"
                    )
                };
                let (lo, hi) = r.split_once('-').ok_or_else(bad)?;
                let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
                let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
                if lo == 0 || lo > hi {
                    return Err(bad());
                }
                if (lo..=hi).contains(&vxlan_port) {
                    return Err(format!(
                        "uplink.nodeport_range = '{r}' contains the VXLAN port {vxlan_port}"
                    ));
                }
                Some((lo, hi))
            }
        };
        let params = FilterParams {
            vxlan_port,
            nodeports,
        };
        match self.xdp_filter.as_deref() {
            None | Some("on") => Ok(XdpProgram::Filter(params)),
            Some("full-if-unavailable") => Ok(XdpProgram::FilterOrAll(params)),
            Some("off") => Ok(XdpProgram::RedirectAll),
            Some(m) => Err(format!(
                "uplink.xdp_filter = '{m}' (expected on, full-if-unavailable or off)"
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlaySection {
    /// `vxlan` (default) or `flannel`.
    pub mode: Option<String>,
    pub port: Option<u16>,
    pub vni: Option<u32>,
}

impl OverlaySection {
    /// The realizer's settings.
    pub fn config(&self) -> Result<crate::overlay::node::OverlayConfig, String> {
        use crate::overlay::node::OverlayConfig;
        let base = match self.mode.as_deref() {
            None | Some("vxlan") => OverlayConfig::default(),
            Some("flannel") => OverlayConfig::flannel(),
            Some(m) => return Err(format!("overlay.mode = '{m}' (expected vxlan or flannel)")),
        };
        let vni = self.vni.unwrap_or(base.vni);
        if vni >= 1 << 24 {
            return Err(format!("overlay.vni = {vni} does not fit 24 bits"));
        }
        Ok(OverlayConfig {
            port: self.port.unwrap_or(base.port),
            vni,
        })
    }
}

/// `[metrics]`: the Prometheus endpoint (off unless `addr` is given here or with
/// `--metrics-addr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `IP:PORT` to serve `GET /metrics` on.
    pub addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathSection {
    pub pool_frames: u32,
    pub idle_spin_us: u64,
    pub max_sleep_ms: u64,
    pub afxdp: bool,
    pub xdp_fastpath: bool,
}

impl Default for DatapathSection {
    fn default() -> Self {
        let d = DatapathConfig::default();
        DatapathSection {
            pool_frames: d.pool_frames,
            idle_spin_us: d.idle_spin.as_micros() as u64,
            max_sleep_ms: d.max_sleep.as_millis() as u64,
            afxdp: d.use_umem,
            xdp_fastpath: d.xdp_fastpath,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeSection {
    pub mac_aging_s: u64,
    pub mac_table_size: usize,
}

impl Default for BridgeSection {
    fn default() -> Self {
        BridgeSection {
            mac_aging_s: crate::bridge::DEFAULT_AGING.as_secs(),
            mac_table_size: crate::bridge::DEFAULT_CAPACITY,
        }
    }
}

impl DaemonConfig {
    pub fn load(path: &Path) -> Result<DaemonConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<DaemonConfig, String> {
        let c: DaemonConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let d = &self.datapath;
        if !(256..=1 << 20).contains(&d.pool_frames) {
            return Err(format!(
                "datapath.pool_frames = {} is outside 256..=1048576",
                d.pool_frames
            ));
        }
        if d.max_sleep_ms == 0 || d.max_sleep_ms > 1000 {
            return Err(format!(
                "datapath.max_sleep_ms = {} is outside 1..=1000",
                d.max_sleep_ms
            ));
        }
        if self.bridge.mac_table_size == 0 {
            return Err("bridge.mac_table_size must be at least 1".into());
        }
        if self.bridge.mac_aging_s == 0 {
            return Err("bridge.mac_aging_s must be at least 1".into());
        }
        self.conntrack.validate()?;
        self.services.validate()?;
        let overlay = self.overlay.config()?;
        self.uplink.program(overlay.port)?;
        Ok(())
    }

    /// The datapath configuration for workers pinned to `cores`.
    pub fn datapath(&self, cores: Vec<Option<usize>>) -> DatapathConfig {
        DatapathConfig {
            workers: cores,
            pool_frames: self.datapath.pool_frames,
            mac_aging: Duration::from_secs(self.bridge.mac_aging_s),
            mac_capacity: self.bridge.mac_table_size,
            idle_spin: Duration::from_micros(self.datapath.idle_spin_us),
            max_sleep: Duration::from_millis(self.datapath.max_sleep_ms),
            use_umem: self.datapath.afxdp,
            threaded: true,
            conntrack: self.conntrack,
            services: self.services,
            // validate() checked both; a config built in code falls back to the
            // default filter (never to taking every frame).
            uplink_xdp: self
                .overlay
                .config()
                .and_then(|o| self.uplink.program(o.port))
                .unwrap_or_else(|_| crate::port::XdpProgram::Filter(Default::default())),
            policy_audit_per_s: self.policy.audit_per_s,
            xdp_fastpath: self.datapath.xdp_fastpath,
        }
    }
}

/// Parses `--cores`: "1", "0,2", "0-3", "0-1,4".
pub fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list '{s}' (expected e.g. 1 or 0,2 or 0-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 1024 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty CPU list '{s}'"));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(
            DaemonConfig::parse("").expect("parse"),
            DaemonConfig::default()
        );
    }

    #[test]
    fn values_and_errors() {
        let c = DaemonConfig::parse("[bridge]\nmac_aging_s = 10\n[datapath]\nidle_spin_us = 0\n")
            .expect("parse");
        assert_eq!(c.bridge.mac_aging_s, 10);
        assert_eq!(c.datapath.idle_spin_us, 0);
        assert!(!c.datapath(vec![None]).xdp_fastpath, "off unless asked for");
        let on = DaemonConfig::parse("[datapath]\nxdp_fastpath = true\n").expect("valid");
        assert!(on.datapath(vec![None]).xdp_fastpath);
        assert!(DaemonConfig::parse("[bridge]\nmac_table_size = 0").is_err());
        assert!(DaemonConfig::parse("[bridge]\nunknown = 1").is_err());
        assert!(DaemonConfig::parse("[datapath]\npool_frames = 10").is_err());
        assert!(DaemonConfig::parse("not toml [").is_err());
    }

    #[test]
    fn uplink_section() {
        use crate::port::XdpProgram;
        use crate::port::xdp_filter::FilterParams;
        let dp = |t: &str| DaemonConfig::parse(t).map(|c| c.datapath(vec![None]).uplink_xdp);
        assert_eq!(dp(""), Ok(XdpProgram::Filter(FilterParams::default())));
        assert_eq!(
            dp("[overlay]\nmode = \"flannel\"\n[uplink]\nnodeport_range = \"none\""),
            Ok(XdpProgram::Filter(FilterParams {
                vxlan_port: 8472,
                nodeports: None
            }))
        );
        assert_eq!(
            dp("[uplink]\nxdp_filter = \"full-if-unavailable\"\nnodeport_range = \"31000-31010\""),
            Ok(XdpProgram::FilterOrAll(FilterParams {
                vxlan_port: 4789,
                nodeports: Some((31000, 31010))
            }))
        );
        assert_eq!(
            dp("[uplink]\nxdp_filter = \"off\""),
            Ok(XdpProgram::RedirectAll)
        );
        assert!(dp("[uplink]\nxdp_filter = \"maybe\"").is_err());
        assert!(dp("[uplink]\nnodeport_range = \"32000-31000\"").is_err());
        assert!(
            dp("[uplink]\nnodeport_range = \"4000-5000\"").is_err(),
            "VXLAN port inside"
        );
        assert!(dp("[uplink]\nnodeport_range = \"x\"").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cores("1"), Ok(vec![1]));
        assert_eq!(parse_cores("0-2,5,1"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cores("").is_err());
        assert!(parse_cores("a").is_err());
        assert!(parse_cores("3-1").is_err());
    }
}

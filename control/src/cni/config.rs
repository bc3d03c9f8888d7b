//! The network configuration on stdin: the standard keys (`cniVersion`, `name`,
//! `ipam`, `dns`, `prevResult`, `runtimeConfig`, `cni.dev/valid-attachments`) and
//! our own (`socket`, `mtu`).
//!
//! Keys we do not know are ignored, not refused: a runtime passes through whatever
//! the administrator wrote, and other plugins' keys are common in shared configs.
//! The whole object is kept ([`NetConf::raw`]) because a delegated IPAM plugin gets
//! the complete configuration, not just its `ipam` section.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::{CniError, CniResult};
use super::result::Dns;
use super::version::{self, Version};
use crate::client::DEFAULT_SOCKET;

/// MTU of the pod interface (and its host end) when neither the configuration nor
/// the node says (see `mtu.rs` for the order of sources): a 1500-byte uplink less
/// the 50 bytes of a VXLAN encapsulation (outer Ethernet 14, IPv4 20, UDP 8, VXLAN
/// 8), so pod traffic fits the overlay between nodes unchanged.
pub const DEFAULT_MTU: u32 = 1450;

/// Smallest MTU Linux accepts for IPv4 (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a veth accepts.
pub const MAX_MTU: u32 = 65535;

/// The `ipam` section: only its `type` matters to us; the rest is the IPAM
/// plugin's business (it reads it from [`NetConf::raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub plugin: String,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// A parsed network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion` as written (echoed in results and errors).
    pub cni_version: String,
    pub version: Version,
    pub name: String,
    /// `socket`: vswitchd's control socket.
    pub socket: PathBuf,
    /// `mtu` of the pod interface and its host end, when the configuration sets
    /// it; otherwise ADD derives it from the uplink (`mtu.rs`).
    pub mtu: Option<u32>,
    /// Absent only where the command allows it (see [`NetConf::require_ipam`]).
    pub ipam: Option<IpamConf>,
    /// `dns`: copied into the result when IPAM gives none.
    pub dns: Option<Dns>,
    /// `prevResult`, unparsed: its format depends on `cniVersion`.
    pub prev_result: Option<Value>,
    /// `runtimeConfig.mac` (the `mac` capability): the pod interface's MAC.
    pub runtime_mac: Option<String>,
    /// `cni.dev/valid-attachments` (GC only).
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The whole object as received.
    pub raw: Value,
}

/// What the first look at stdin found: enough to answer in the right version even
/// when the rest is broken.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    /// Parses and checks a configuration. Not JSON: code 6; an unsupported
    /// `cniVersion`: code 1; anything else wrong: code 7.
    pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::decode(
                "no network configuration on stdin (expected a JSON object)",
            ));
        }
        let raw: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decode(format!("network configuration is not JSON: {e}")))?;
        let Some(obj) = raw.as_object() else {
            return Err(CniError::decode(
                "network configuration is not a JSON object",
            ));
        };
        let cni_version = match obj.get("cniVersion") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(CniError::decode(format!(
                    "cniVersion must be a string, not {other}"
                )));
            }
        };
        let version = version::require_supported(&cni_version)?;
        let name = string(obj, "name")?
            .ok_or_else(|| CniError::config("the network configuration has no \"name\""))?;
        check_network_name(&name)?;
        let socket = match string(obj, "socket")? {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(s) if s.starts_with('/') => PathBuf::from(s),
            Some(s) => {
                return Err(CniError::config(format!(
                    "socket {s:?}: the control socket must be an absolute path"
                )));
            }
        };
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => v
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
                .ok_or_else(|| {
                    CniError::config(format!(
                        "mtu {v}: must be a whole number from {MIN_MTU} to {MAX_MTU}"
                    ))
                })
                .map(Some)?,
        };
        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(i)) => {
                let plugin = string(i, "type")
                    .map_err(|e| e.context("ipam"))?
                    .ok_or_else(|| CniError::config("ipam has no \"type\""))?;
                if plugin.contains('/') || plugin == "." || plugin == ".." {
                    return Err(CniError::config(format!(
                        "ipam type {plugin:?} must be a plugin name, not a path"
                    )));
                }
                Some(IpamConf { plugin })
            }
            Some(other) => {
                return Err(CniError::config(format!(
                    "ipam must be an object, not {other}"
                )));
            }
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Dns::parse(v).map_err(|e| CniError::config(format!("dns: {e}")))?),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(CniError::config(format!(
                    "prevResult must be an object, not {other}"
                )));
            }
        };
        let runtime_mac = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(rc)) => string(rc, "mac").map_err(|e| e.context("runtimeConfig"))?,
            Some(other) => {
                return Err(CniError::config(format!(
                    "runtimeConfig must be an object, not {other}"
                )));
            }
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_valid_attachments(v)?),
        };
        Ok(NetConf {
            cni_version,
            version,
            name,
            socket,
            mtu,
            ipam,
            dns,
            prev_result,
            runtime_mac,
            valid_attachments,
            raw,
        })
    }

    /// The IPAM section, which ADD, DEL, CHECK and GC need: a pod without addresses
    /// is not what anyone configuring this plugin wants.
    pub fn require_ipam(&self) -> CniResult<&IpamConf> {
        self.ipam.as_ref().ok_or_else(|| {
            CniError::config(
                "the network configuration has no \"ipam\" section (e.g. {\"type\": \"host-local\", \"subnet\": ...})",
            )
        })
    }
}

/// A string member; `None` when absent or null, an error when of another type.
fn string(obj: &Map<String, Value>, key: &str) -> CniResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(CniError::config(format!("\"{key}\" must not be empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::config(format!(
            "\"{key}\" must be a string, not {other}"
        ))),
    }
}

/// The spec's network name: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
fn check_network_name(name: &str) -> CniResult<()> {
    let mut b = name.bytes();
    let ok = b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "network name {name:?}: must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
        )))
    }
}

fn parse_valid_attachments(v: &Value) -> CniResult<Vec<ValidAttachment>> {
    let bad = |why: &str| CniError::config(format!("cni.dev/valid-attachments: {why}"));
    let list = v.as_array().ok_or_else(|| bad("must be an array"))?;
    list.iter()
        .map(|a| {
            let get = |k: &str| {
                a.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("an entry has no \"{k}\" string: {a}")))
            };
            Ok(ValidAttachment {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CniResult<NetConf> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "vswitch-cni",
            "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"},
        })
    }

    #[test]
    fn defaults() {
        let c = parse(base()).expect("config");
        assert_eq!(c.mtu, None, "no mtu: ADD derives it from the uplink");
        assert_eq!(c.socket, PathBuf::from("/run/vswitch/vswitchd.sock"));
        assert_eq!(
            c.ipam.as_ref().map(|i| i.plugin.as_str()),
            Some("host-local")
        );
        assert_eq!(c.version, Version::V1_1_0);
        assert!(c.prev_result.is_none() && c.dns.is_none() && c.runtime_mac.is_none());
        // Unknown keys are ignored.
        let mut v = base();
        v["somethingElse"] = json!({"x": 1});
        parse(v).expect("unknown key");
    }

    #[test]
    fn own_keys() {
        let mut v = base();
        v["socket"] = json!("/run/sw2/vswitchd.sock");
        v["mtu"] = json!(9000);
        v["runtimeConfig"] = json!({"mac": "02:11:22:33:44:55", "portMappings": []});
        v["dns"] = json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
        let c = parse(v).expect("config");
        assert_eq!(c.socket, PathBuf::from("/run/sw2/vswitchd.sock"));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.runtime_mac.as_deref(), Some("02:11:22:33:44:55"));
        assert_eq!(c.dns.expect("dns").nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn decoding_errors_are_code_6() {
        for bad in [
            &b""[..],
            b"  \n",
            b"{",
            b"[1,2]",
            b"\"x\"",
            b"{\"cniVersion\": 1}",
        ] {
            let e = NetConf::parse(bad).expect_err("bad");
            assert_eq!(e.code, 6, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn version_errors_are_code_1() {
        for v in [json!("0.2.0"), json!("2.0.0"), json!("latest"), Value::Null] {
            let mut c = base();
            c["cniVersion"] = v.clone();
            assert_eq!(parse(c).expect_err("version").code, 1, "{v}");
        }
    }

    #[test]
    fn invalid_configs_are_code_7() {
        let cases: Vec<(&str, Value)> = vec![
            ("name", Value::Null),
            ("name", json!("has space")),
            ("name", json!("")),
            ("mtu", json!(67)),
            ("mtu", json!(65536)),
            ("mtu", json!("1500")),
            ("mtu", json!(1500.5)),
            ("socket", json!("relative/path.sock")),
            ("socket", json!(5)),
            ("ipam", json!("host-local")),
            ("ipam", json!({"subnet": "10.0.0.0/24"})),
            ("ipam", json!({"type": "../../bin/sh"})),
            ("dns", json!({"nameservers": "10.0.0.1"})),
            ("prevResult", json!([])),
            ("runtimeConfig", json!({"mac": 5})),
            ("cni.dev/valid-attachments", json!([{"containerID": "a"}])),
        ];
        for (k, v) in cases {
            let mut c = base();
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
            let e = parse(c).expect_err(k);
            assert_eq!(e.code, 7, "{k} = {v}: {e}");
        }
    }

    #[test]
    fn missing_ipam_is_refused_where_needed() {
        let mut v = base();
        v.as_object_mut().expect("object").remove("ipam");
        let c = parse(v).expect("parses");
        let e = c.require_ipam().expect_err("no ipam");
        assert_eq!(e.code, 7);
        assert!(e.details.contains("ipam"), "{e}");
    }

    #[test]
    fn valid_attachments() {
        let mut v = base();
        v["cni.dev/valid-attachments"] = json!([{"containerID": "abc", "ifname": "eth0"}, {"containerID": "def", "ifname": "net1"}]);
        let c = parse(v).expect("config");
        let a = c.valid_attachments.expect("list");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].container_id, "def");
        assert_eq!(a[1].ifname, "net1");
    }

    #[test]
    fn peeks_the_version_of_broken_configs() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.4.0","mtu":-1}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(peek_version(b"{"), None);
    }
}

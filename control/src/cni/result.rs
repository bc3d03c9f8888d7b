//! The ADD result (spec section 5, "ADD Success"), read from IPAM plugins and
//! `prevResult`, and written in the version the runtime asked for.
//!
//! One in-memory form serves every supported version; the versions differ only in
//! what is written:
//! - 0.3.0, 0.3.1, 0.4.0: each `ips` entry carries `"version": "4"` or `"6"`;
//! - 1.0.0: no `version`;
//! - 1.1.0: as 1.0.0, plus `mtu`, `socketPath`, `pciID` on interfaces and `mtu`,
//!   `advmss`, `priority`, `table`, `scope` on routes.
//!
//! Reading is lenient (a `version` member is accepted and ignored in any version)
//! because IPAM plugins answer in whatever version they were asked.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use super::version::Version;

/// An address with its prefix length, `10.1.2.3/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The namespace path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; IPAM plugins leave it out.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Cidr,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn parse(v: &Value) -> Result<Dns, String> {
        let obj = v.as_object().ok_or("must be an object")?;
        Ok(Dns {
            nameservers: strings(obj, "nameservers")?,
            domain: opt_str(obj, "domain")?,
            search: strings(obj, "search")?,
            options: strings(obj, "options")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), json!(self.nameservers));
        }
        if let Some(d) = &self.domain {
            m.insert("domain".into(), json!(d));
        }
        if !self.search.is_empty() {
            m.insert("search".into(), json!(self.search));
        }
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        Value::Object(m)
    }
}

/// A success result: what IPAM returns (no interfaces) or what an interface plugin
/// returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Success {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Success {
    /// Reads a result of any supported version. 0.1.0/0.2.0 results (`ip4`, `ip6`)
    /// are refused.
    pub fn parse(v: &Value) -> Result<Success, String> {
        let obj = v.as_object().ok_or("a result must be a JSON object")?;
        if obj.contains_key("ip4") || obj.contains_key("ip6") {
            return Err("a CNI 0.2.0 result (ip4/ip6) is not supported".into());
        }
        let interfaces = list(obj, "interfaces")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_interface(v).map_err(|e| format!("interfaces[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let ips = list(obj, "ips")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_ip(v, interfaces.len()).map_err(|e| format!("ips[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = list(obj, "routes")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_route(v).map_err(|e| format!("routes[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(d) => Dns::parse(d).map_err(|e| format!("dns: {e}"))?,
        };
        Ok(Success {
            interfaces,
            ips,
            routes,
            dns,
        })
    }

    /// Appends `other`'s interfaces, addresses and routes to this result, shifting
    /// its interface indexes; DNS is taken from `other` where this one has none.
    pub fn append(&mut self, other: Success) {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(other.routes);
        if self.dns.is_empty() {
            self.dns = other.dns;
        }
    }

    /// The result as version `version` writes it, with `cniVersion` = `cni_version`.
    pub fn to_json(&self, version: Version, cni_version: &str) -> Value {
        let v11 = version.has_1_1_fields();
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                put(&mut m, "mac", i.mac.as_ref().map(|s| json!(s)));
                put(&mut m, "sandbox", i.sandbox.as_ref().map(|s| json!(s)));
                if v11 {
                    put(&mut m, "mtu", i.mtu.map(|n| json!(n)));
                    put(
                        &mut m,
                        "socketPath",
                        i.socket_path.as_ref().map(|s| json!(s)),
                    );
                    put(&mut m, "pciID", i.pci_id.as_ref().map(|s| json!(s)));
                }
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if version.has_ip_version_field() {
                    m.insert(
                        "version".into(),
                        json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                    );
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                put(&mut m, "gateway", ip.gateway.map(|g| json!(g.to_string())));
                put(&mut m, "interface", ip.interface.map(|i| json!(i)));
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(r.dst.to_string()));
                put(&mut m, "gw", r.gw.map(|g| json!(g.to_string())));
                if v11 {
                    put(&mut m, "mtu", r.mtu.map(|n| json!(n)));
                    put(&mut m, "advmss", r.advmss.map(|n| json!(n)));
                    put(&mut m, "priority", r.priority.map(|n| json!(n)));
                    put(&mut m, "table", r.table.map(|n| json!(n)));
                    put(&mut m, "scope", r.scope.map(|n| json!(n)));
                }
                Value::Object(m)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(cni_version));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), self.dns.to_json());
        Value::Object(out)
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.into(), v);
    }
}

fn list<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("{key} must be an array, not {other}")),
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} must be a string, not {other}")),
    }
}

fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} must be a whole number, not {v}")),
    }
}

fn strings(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key} must hold strings, not {s}"))
            })
            .collect(),
        Some(other) => Err(format!("{key} must be a list of strings, not {other}")),
    }
}

fn opt_ip(obj: &Map<String, Value>, key: &str) -> Result<Option<IpAddr>, String> {
    opt_str(obj, key)?
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("{key} {s:?} is not an IP address"))
        })
        .transpose()
}

fn cidr(obj: &Map<String, Value>, key: &str) -> Result<Cidr, String> {
    opt_str(obj, key)?
        .ok_or_else(|| format!("no {key}"))?
        .parse()
}

fn parse_interface(v: &Value) -> Result<Interface, String> {
    let obj = v.as_object().ok_or("must be an object")?;
    Ok(Interface {
        name: opt_str(obj, "name")?.ok_or("no name")?,
        mac: opt_str(obj, "mac")?,
        mtu: opt_u32(obj, "mtu")?,
        sandbox: opt_str(obj, "sandbox")?,
        socket_path: opt_str(obj, "socketPath")?,
        pci_id: opt_str(obj, "pciID")?,
    })
}

fn parse_ip(v: &Value, n_interfaces: usize) -> Result<IpConfig, String> {
    let obj = v.as_object().ok_or("must be an object")?;
    let interface = match obj.get("interface") {
        None | Some(Value::Null) => None,
        Some(i) => {
            let i = i
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| format!("interface must be an index, not {i}"))?;
            if i >= n_interfaces {
                return Err(format!(
                    "interface {i} is out of range ({n_interfaces} interfaces)"
                ));
            }
            Some(i)
        }
    };
    Ok(IpConfig {
        address: cidr(obj, "address")?,
        gateway: opt_ip(obj, "gateway")?,
        interface,
    })
}

fn parse_route(v: &Value) -> Result<Route, String> {
    let obj = v.as_object().ok_or("must be an object")?;
    Ok(Route {
        dst: cidr(obj, "dst")?,
        gw: opt_ip(obj, "gw")?,
        mtu: opt_u32(obj, "mtu")?,
        advmss: opt_u32(obj, "advmss")?,
        priority: opt_u32(obj, "priority")?,
        table: opt_u32(obj, "table")?,
        scope: opt_u32(obj, "scope")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Success {
        Success {
            interfaces: vec![
                Interface {
                    name: "vsw0123456789ab".into(),
                    mac: Some("0a:00:00:00:00:01".into()),
                    mtu: Some(1450),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:00:00:00:00:02".into()),
                    mtu: Some(1450),
                    sandbox: Some("/run/netns/p".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.5/24".parse().expect("cidr"),
                    gateway: Some("10.244.1.1".parse().expect("ip")),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().expect("cidr"),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().expect("cidr"),
                gw: None,
                mtu: Some(1400),
                advmss: None,
                priority: Some(10),
                table: None,
                scope: None,
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn writes_1_1_0() {
        let v = sample().to_json(Version::V1_1_0, "1.1.0");
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "vsw0123456789ab", "mac": "0a:00:00:00:00:01", "mtu": 1450},
                    {"name": "eth0", "mac": "0a:00:00:00:00:02", "mtu": 1450, "sandbox": "/run/netns/p"}
                ],
                "ips": [
                    {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}
                ],
                "routes": [{"dst": "0.0.0.0/0", "mtu": 1400, "priority": 10}],
                "dns": {"nameservers": ["10.96.0.10"]}
            })
        );
    }

    #[test]
    fn writes_1_0_0_without_1_1_fields() {
        let v = sample().to_json(Version::V1_0_0, "1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert_eq!(v["routes"][0], json!({"dst": "0.0.0.0/0"}));
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn writes_0_x_with_ip_versions() {
        for (ver, s) in [
            (Version::new(0, 3, 0), "0.3.0"),
            (Version::new(0, 3, 1), "0.3.1"),
            (Version::V0_4_0, "0.4.0"),
        ] {
            let v = sample().to_json(ver, s);
            assert_eq!(v["cniVersion"], s);
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert_eq!(v["ips"][0]["interface"], 1);
            assert!(v["interfaces"][1].get("mtu").is_none());
        }
    }

    #[test]
    fn round_trips_every_version() {
        for (ver, s) in [
            (Version::V0_4_0, "0.4.0"),
            (Version::V1_0_0, "1.0.0"),
            (Version::V1_1_0, "1.1.0"),
        ] {
            let back = Success::parse(&sample().to_json(ver, s)).expect("parse");
            let mut want = sample();
            if !ver.has_1_1_fields() {
                for i in &mut want.interfaces {
                    i.mtu = None;
                }
                want.routes[0].mtu = None;
                want.routes[0].priority = None;
            }
            assert_eq!(back, want, "{s}");
        }
    }

    #[test]
    fn reads_ipam_output() {
        // host-local 1.1.1 answering a 1.0.0 request.
        let v = json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.250.0.2/24", "gateway": "10.250.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {}});
        let r = Success::parse(&v).expect("ipam");
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.ips[0].address.prefix, 24);
        assert!(r.dns.is_empty());
        // 0.4.0 with versions.
        let v = json!({"cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.250.0.2/24"}]});
        Success::parse(&v).expect("0.4.0");
    }

    #[test]
    fn refuses_broken_results() {
        for bad in [
            json!([]),
            json!({"ip4": {"ip": "10.0.0.1/24"}}),
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.1/33"}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "interface": 0}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "gateway": "x"}]}),
            json!({"routes": [{"gw": "10.0.0.1"}]}),
            json!({"interfaces": [{"mac": "aa"}]}),
            json!({"dns": {"nameservers": [1]}}),
        ] {
            assert!(Success::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn append_shifts_interface_indexes() {
        let mut prev = Success {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Interface::default()
            }],
            ..Success::default()
        };
        prev.append(sample());
        assert_eq!(prev.interfaces.len(), 3);
        assert_eq!(prev.ips[0].interface, Some(2));
        assert_eq!(prev.dns.nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "fd00::1/128".parse().expect("v6");
        assert_eq!(c.prefix, 128);
        assert_eq!(c.to_string(), "fd00::1/128");
        for bad in ["10.0.0.1", "10.0.0.1/", "10.0.0.1/x", "x/24", "fd00::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}

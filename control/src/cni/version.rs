//! CNI specification versions: which ones we speak, and how results differ between
//! them.
//!
//! Two result formats matter here: 0.3.0 to 0.4.0 (`ips[].version` present) and 1.x
//! (`version` removed; 1.1.0 adds `mtu` to interfaces and `mtu`, `advmss`,
//! `priority`, `table`, `scope` to routes). 0.1.0 and 0.2.0 had a different result
//! altogether and are not supported.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Value, json};

use super::error::CniError;

/// Every version we accept in `cniVersion`, oldest first (the VERSION reply).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version we implement; used when the input does not say.
pub const CURRENT: &str = "1.1.0";

/// A `major.minor.patch` specification version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const V0_4_0: Version = Version::new(0, 4, 0);
    pub const V1_0_0: Version = Version::new(1, 0, 0);
    pub const V1_1_0: Version = Version::new(1, 1, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `"1.0.0"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| {
            // Leading '+' or '-' and leading zeros are not semver; be strict.
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse::<u32>().ok()
            }
        });
        let v = Version::new(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }

    /// Whether results of this version carry `ips[].version` (0.3.x, 0.4.0).
    pub fn has_ip_version_field(self) -> bool {
        self.major == 0
    }

    /// Whether this version knows the 1.1.0 additions (interface and route MTU...).
    pub fn has_1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Whether CHECK exists in this version (since 0.4.0).
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// Whether GC and STATUS exist in this version (since 1.1.0).
    pub fn has_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Whether a plugin speaking `self` understands a configuration and gives a
    /// result of the same shape as `other` does, for the purpose of talking to a
    /// delegated plugin that does not know `other`: same result format family.
    pub fn same_format(self, other: Version) -> bool {
        self.major == other.major
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Checks that `cniVersion` is one we speak.
pub fn require_supported(s: &str) -> Result<Version, CniError> {
    if s.is_empty() {
        return Err(CniError::version(format!(
            "the configuration has no cniVersion; supported: {}",
            SUPPORTED.join(", ")
        )));
    }
    match Version::parse(s) {
        Some(v) if SUPPORTED.contains(&v.to_string().as_str()) => Ok(v),
        _ => Err(CniError::version(format!(
            "cniVersion {s:?} is not supported; supported: {}",
            SUPPORTED.join(", ")
        ))),
    }
}

/// The VERSION reply. `requested` is the `cniVersion` of the input, echoed as the
/// spec asks; we answer in our own version when there is none.
pub fn version_reply(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.filter(|s| !s.is_empty()).unwrap_or(CURRENT),
        "supportedVersions": SUPPORTED,
    })
}

/// For a delegated plugin that does not know `wanted`: the newest version it lists
/// in `supported` with the same result format (same major version), not newer than
/// `wanted`. Debian's containernetworking-plugins 1.1.1 stop at 1.0.0, whose
/// configuration and result are what 1.1.0 gives IPAM, so a 1.1.0 network can still
/// use its `host-local`.
pub fn fallback(wanted: Version, supported: &[String]) -> Option<Version> {
    supported
        .iter()
        .filter_map(|s| Version::parse(s))
        .filter(|v| *v <= wanted && v.same_format(wanted) && *v >= Version::new(0, 3, 0))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strictly() {
        assert_eq!(Version::parse("1.1.0"), Some(Version::V1_1_0));
        assert_eq!(Version::parse("0.3.1"), Some(Version::new(0, 3, 1)));
        for bad in [
            "", "1", "1.0", "1.0.0.0", "v1.0.0", "1.0.x", "1..0", "-1.0.0", "1.0.+1",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn orders_numerically() {
        assert!(Version::parse("0.10.0") > Version::parse("0.4.0"));
        assert!(Version::V1_0_0 < Version::V1_1_0);
    }

    #[test]
    fn supported_versions_only() {
        for v in SUPPORTED {
            assert_eq!(require_supported(v).expect(v).to_string(), v);
        }
        for bad in ["0.2.0", "0.1.0", "1.2.0", "2.0.0", "banana", ""] {
            let e = require_supported(bad).expect_err(bad);
            assert_eq!(e.code, 1, "{bad}");
        }
    }

    #[test]
    fn version_reply_echoes_the_input() {
        let r = version_reply(Some("0.4.0"));
        assert_eq!(r["cniVersion"], "0.4.0");
        assert_eq!(
            r["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(version_reply(None)["cniVersion"], "1.1.0");
    }

    #[test]
    fn fallback_stays_within_the_format() {
        let debian: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(fallback(Version::V1_1_0, &debian), Some(Version::V1_0_0));
        assert_eq!(fallback(Version::V0_4_0, &debian), Some(Version::V0_4_0));
        let new_only = vec!["1.0.0".to_string(), "1.1.0".to_string()];
        assert_eq!(fallback(Version::V0_4_0, &new_only), None);
        assert_eq!(fallback(Version::V1_1_0, &[]), None);
    }

    #[test]
    fn feature_gates() {
        assert!(Version::new(0, 3, 1).has_ip_version_field());
        assert!(!Version::V1_0_0.has_ip_version_field());
        assert!(!Version::new(0, 3, 1).has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_gc_and_status());
        assert!(Version::V1_1_0.has_1_1_fields());
    }
}

//! CNI errors: the spec's numeric codes and the JSON error object printed on stdout.
//!
//! Codes 0-99 are the spec's (section 5, "Error"); 100 and up are ours and listed in
//! `docs/cni.md`. A runtime looks only at `code`; `msg` is short, `details` says why.

use std::fmt;

use serde_json::{Value, json};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration (message names key and value).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist: the runtime need not clean up after it.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables (message names them).
pub const INVALID_ENVIRONMENT: u32 = 4;
/// I/O failure, e.g. reading stdin.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content (the configuration is not JSON, ...).
pub const DECODING_FAILURE: u32 = 6;
/// Invalid network configuration.
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// Try again later: a transient condition (vswitchd not answering).
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot service ADD requests.
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;

/// Ours: CHECK found the attachment missing or not as the ADD result says.
pub const ATTACHMENT_BROKEN: u32 = 100;
/// Ours: vswitchd answered, but refused the request.
pub const SWITCH_REFUSED: u32 = 101;
/// Ours: a kernel operation (netlink, namespace, ioctl) failed.
pub const KERNEL_FAILURE: u32 = 102;
/// Ours: the IPAM plugin failed without a CNI error of its own (not found, crashed,
/// printed something that is not a result).
pub const IPAM_FAILURE: u32 = 103;
/// Ours: GC could not remove everything; the details list what is left.
pub const GC_INCOMPLETE: u32 = 104;
/// A bug of the plugin (a worker thread panicked); the reference plugins use the
/// same number for errors without a code.
pub const INTERNAL: u32 = 999;

/// An error as the CNI spec prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn env(details: impl Into<String>) -> CniError {
        CniError::new(
            INVALID_ENVIRONMENT,
            "invalid environment variables",
            details,
        )
    }

    pub fn config(details: impl Into<String>) -> CniError {
        CniError::new(
            INVALID_NETWORK_CONFIG,
            "invalid network configuration",
            details,
        )
    }

    pub fn version(details: impl Into<String>) -> CniError {
        CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI version", details)
    }

    pub fn decode(details: impl Into<String>) -> CniError {
        CniError::new(DECODING_FAILURE, "failed to decode content", details)
    }

    pub fn kernel(details: impl Into<String>) -> CniError {
        CniError::new(KERNEL_FAILURE, "kernel operation failed", details)
    }

    /// Prefixes the details with what was being done, keeping code and message.
    pub fn context(mut self, what: impl fmt::Display) -> CniError {
        self.details = if self.details.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", self.details)
        };
        self
    }

    /// The error object for stdout, in protocol version `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::from(self.details.as_str());
        }
        v
    }

    /// Reads an error object another plugin (IPAM) printed.
    pub fn from_json(v: &Value) -> Option<CniError> {
        let code = u32::try_from(v.get("code")?.as_u64()?).ok()?;
        Some(CniError {
            code,
            msg: v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            details: v
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}

impl std::error::Error for CniError {}

pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::config("mtu 10 is below 68");
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "invalid network configuration",
                   "details": "mtu 10 is below 68"})
        );
        // No empty details member.
        let e = CniError::new(TRY_AGAIN_LATER, "vswitchd is not reachable", "");
        assert!(e.to_json("0.4.0").get("details").is_none());
    }

    #[test]
    fn context_prefixes_details() {
        let e = CniError::kernel("EEXIST").context("creating veth vswab");
        assert_eq!(e.details, "creating veth vswab: EEXIST");
        assert_eq!(e.code, KERNEL_FAILURE);
        let e = CniError::new(5, "m", "").context("reading stdin");
        assert_eq!(e.details, "reading stdin");
    }

    #[test]
    fn reads_another_plugins_error() {
        let v = json!({"code": 1, "msg": "incompatible CNI versions", "details": "x"});
        let e = CniError::from_json(&v).expect("error");
        assert_eq!(e.code, 1);
        assert_eq!(e.details, "x");
        assert!(CniError::from_json(&json!({"msg": "no code"})).is_none());
        assert!(CniError::from_json(&json!({"code": -1})).is_none());
    }

    #[test]
    fn display_names_the_code() {
        let e = CniError::env("CNI_IFNAME is missing");
        assert_eq!(
            e.to_string(),
            "invalid environment variables: CNI_IFNAME is missing (code 4)"
        );
    }
}

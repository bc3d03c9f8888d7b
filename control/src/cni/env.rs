//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, read and checked as the spec defines them (section 2).
//!
//! Variables are read through a lookup function so tests need not touch the
//! process environment.

use std::path::PathBuf;

use super::error::{CniError, CniResult};

/// The operation asked for in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`, in order. Keys we do not know are
/// kept and ignored (a runtime passes the same `CNI_ARGS` to every plugin of a
/// chain; Kubernetes adds `K8S_POD_UID`, `K8S_POD_INFRA_CONTAINER_ID`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(Vec<(String, String)>);

impl CniArgs {
    pub fn parse(s: &str) -> CniResult<CniArgs> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                CniError::env(format!(
                    "CNI_ARGS: {item:?} is not a KEY=VALUE pair (pairs are separated by ';')"
                ))
            })?;
            if k.is_empty() {
                return Err(CniError::env(format!(
                    "CNI_ARGS: {item:?} has an empty key"
                )));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs(pairs))
    }

    /// The value of `key`, if given and not empty (the last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Everything the environment says, checked for the command at hand.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<PathBuf>,
}

/// One attachment: `(CNI_CONTAINERID, CNI_IFNAME)` and where the container is.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Absent only for DEL, where the namespace may be gone already.
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

impl Attachment {
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` of `CNI_ARGS`, empty when not given
    /// (runtimes other than the kubelet's need not pass them).
    pub fn pod_name(&self) -> (String, String) {
        (
            self.args
                .get("K8S_POD_NAMESPACE")
                .unwrap_or_default()
                .to_string(),
            self.args
                .get("K8S_POD_NAME")
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl Env {
    /// Reads and checks the environment through `var` (e.g. `std::env::var`).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
        let command = match var("CNI_COMMAND") {
            None => return Err(CniError::env("CNI_COMMAND is not set")),
            Some(c) => Command::parse(&c).ok_or_else(|| {
                CniError::env(format!(
                    "CNI_COMMAND {c:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
                ))
            })?,
        };
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            check_container_id(id)?;
        }
        let ifname = nonempty("CNI_IFNAME");
        if let Some(n) = &ifname {
            check_ifname(n)?;
        }
        let args = CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?;
        let path = var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname,
            args,
            path,
        })
    }

    /// The attachment of an ADD, DEL or CHECK: container id and interface name are
    /// required; the namespace is required when `need_netns` (ADD, CHECK).
    pub fn attachment(&self, need_netns: bool) -> CniResult<Attachment> {
        let mut missing = Vec::new();
        if self.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if self.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if need_netns && self.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        match (&self.container_id, &self.ifname) {
            (Some(c), Some(i)) if missing.is_empty() => Ok(Attachment {
                container_id: c.clone(),
                ifname: i.clone(),
                netns: self.netns.clone(),
                args: self.args.clone(),
            }),
            _ => Err(CniError::env(format!(
                "{} needs {} (not set or empty)",
                self.command.as_str(),
                missing.join(", ")
            ))),
        }
    }
}

/// The spec's container id: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
pub fn check_container_id(id: &str) -> CniResult<()> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?}: must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
        )))
    }
}

/// Linux interface name rules, as the spec repeats them: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or white space.
pub fn check_ifname(name: &str) -> CniResult<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_IFNAME {name:?}: an interface name has 1 to 15 bytes and no '/', ':' or white space, and is not '.' or '..'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> CniResult<Env> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_an_add() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ])
        .expect("env");
        assert_eq!(e.command, Command::Add);
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        let a = e.attachment(true).expect("attachment");
        assert_eq!(a.pod_name(), ("default".into(), "web-0".into()));
        assert_eq!(a.netns, Some(PathBuf::from("/run/netns/x")));
    }

    #[test]
    fn missing_variables_are_named() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).expect("env");
        let err = e.attachment(true).expect_err("missing");
        assert_eq!(err.code, 4);
        assert!(err.details.contains("CNI_CONTAINERID"), "{err}");
        assert!(err.details.contains("CNI_NETNS"), "{err}");
        assert!(!err.details.contains("CNI_IFNAME"), "{err}");
        // DEL does without the namespace.
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .expect("env");
        assert!(e.attachment(false).expect("del").netns.is_none());
    }

    #[test]
    fn bad_command() {
        assert_eq!(env(&[]).expect_err("unset").code, 4);
        let e = env(&[("CNI_COMMAND", "add")]).expect_err("lower case");
        assert!(e.details.contains("\"add\""), "{e}");
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "0abc", "abc_1.2-3", "f".repeat(64).as_str()] {
            check_container_id(ok).expect(ok);
        }
        for bad in ["", "-a", "_a", "a b", "a/b", "a;b"] {
            assert_eq!(check_container_id(bad).expect_err(bad).code, 4, "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "net1", "a", "123456789012345"] {
            check_ifname(ok).expect(ok);
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert_eq!(check_ifname(bad).expect_err(bad).code, 4, "{bad}");
        }
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse("A=1;B=;A=2;;").expect("args");
        assert_eq!(a.get("A"), Some("2"));
        assert_eq!(a.get("B"), None);
        assert_eq!(a.get("C"), None);
        assert_eq!(CniArgs::parse("A=1;garbage").expect_err("bad").code, 4);
        assert_eq!(CniArgs::parse("=1").expect_err("empty key").code, 4);
        assert_eq!(CniArgs::parse("").expect("empty"), CniArgs::default());
    }
}

//! A container runtime's side of CNI, for testing `vswitch-cni`: plugins are run
//! exactly as a runtime runs them (environment + configuration on stdin, inside the
//! runtime's network namespace), and a configuration list is executed as the spec's
//! section 3 says (ADD in order with each plugin's result as the next one's
//! `prevResult`, DEL in reverse with the final ADD result, CHECK in order).
//!
//! The "runtime's namespace" is the switch's test namespace: plugins run there with
//! `ip netns exec`, so the host ends of the veths are created next to the test's
//! vswitchd and never in the root namespace.

use crate::daemon::bin_dir;
use crate::netns::Netns;
use crate::{Result, cmd, err};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where Debian's containernetworking-plugins installs the standard plugins.
pub const STANDARD_PLUGINS: &str = "/usr/lib/cni";

/// How long one plugin run may take.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The attachment parameters of one call.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    /// `CNI_NETNS`: the path of the pod's namespace.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, as a runtime builds it.
    pub args: String,
}

impl Attachment {
    /// An attachment of pod namespace `ns` as the kubelet would describe it.
    pub fn kube(container_id: &str, ns: &Netns, ifname: &str, pod: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: format!("/run/netns/{}", ns.name()),
            ifname: ifname.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}"
            ),
        }
    }
}

/// What one plugin run printed, and how it exited.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// stdout as JSON, if it is JSON.
    pub json: Option<Value>,
    pub describe: String,
}

impl PluginRun {
    /// The result of a successful run (`Value::Null` for no output), or an error
    /// with everything the plugin said.
    pub fn ok(&self) -> Result<Value> {
        if self.success {
            Ok(self.json.clone().unwrap_or(Value::Null))
        } else {
            Err(err!(
                "{} failed: stdout: {} stderr: {}",
                self.describe,
                self.stdout.trim(),
                self.stderr.trim()
            ))
        }
    }

    /// The CNI error code of a failed run; an error if it succeeded or printed no
    /// error object.
    pub fn error_code(&self) -> Result<u64> {
        if self.success {
            return Err(err!(
                "{} succeeded, expected a failure: {}",
                self.describe,
                self.stdout.trim()
            ));
        }
        self.json
            .as_ref()
            .and_then(|j| j["code"].as_u64())
            .ok_or_else(|| {
                err!(
                    "{} failed without a CNI error on stdout: {} / {}",
                    self.describe,
                    self.stdout.trim(),
                    self.stderr.trim()
                )
            })
    }

    /// `details` and `msg` of the error, for matching on words.
    pub fn error_text(&self) -> String {
        self.json
            .as_ref()
            .map(|j| format!("{} {}", j["msg"], j["details"]))
            .unwrap_or_default()
    }
}

/// Runs plugins inside the namespace `ns` (the switch's).
pub struct Runtime {
    ns: String,
    dirs: Vec<PathBuf>,
}

impl Runtime {
    /// Plugins are looked up in the build's binary directory (`vswitch-cni`) and
    /// in [`STANDARD_PLUGINS`]; both are also the plugins' `CNI_PATH`. Fails if
    /// the standard plugins are not installed.
    pub fn new(ns: &Netns) -> Result<Runtime> {
        let std_dir = PathBuf::from(STANDARD_PLUGINS);
        if !std_dir.join("host-local").is_file() {
            return Err(err!(
                "{STANDARD_PLUGINS}/host-local not found: install containernetworking-plugins (scripts/install-deps.sh)"
            ));
        }
        crate::daemon::binary("vswitch-cni")?;
        Ok(Runtime {
            ns: ns.name().into(),
            dirs: vec![bin_dir()?, std_dir],
        })
    }

    /// `CNI_PATH`.
    pub fn cni_path(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| err!("plugin {plugin} not found in {}", self.cni_path()))
    }

    /// Runs plugin `plugin` with `CNI_COMMAND=command`, the attachment's variables
    /// (if any) and `stdin`.
    pub fn exec(
        &self,
        plugin: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &[u8],
    ) -> Result<PluginRun> {
        let exe = self.find(plugin)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(&exe);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                c.env_remove(k);
            }
        }
        c.env("CNI_COMMAND", command)
            .env("CNI_PATH", self.cni_path());
        if let Some(a) = att {
            c.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", &a.args);
        }
        run_with_stdin(c, stdin, plugin, command)
    }

    /// Runs `vswitch-cni` with a configuration object.
    pub fn vswitch(
        &self,
        command: &str,
        att: Option<&Attachment>,
        conf: &Value,
    ) -> Result<PluginRun> {
        self.exec("vswitch-cni", command, att, conf.to_string().as_bytes())
    }

    /// ADD of a configuration list: each plugin gets the previous one's result.
    /// `capability_args` are the runtime's capability arguments (`portMappings`,
    /// `bandwidth`, ...), given to the plugins that declare the capability. Stops
    /// at the first failure, as a runtime does.
    pub fn add_list(
        &self,
        list: &Value,
        att: &Attachment,
        capability_args: &Value,
    ) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for p in plugins(list)? {
            let conf = derive(list, p, prev.as_ref(), capability_args, true)?;
            let r = self.exec(
                plugin_type(p)?,
                "ADD",
                Some(att),
                conf.to_string().as_bytes(),
            )?;
            prev = Some(r.ok()?);
        }
        prev.ok_or_else(|| err!("empty plugin list"))
    }

    /// CHECK of a configuration list with the final ADD result. Plugins whose
    /// type is in `skip` are left out (a plugin known to fail CHECK by a bug of
    /// its own).
    pub fn check_list(
        &self,
        list: &Value,
        att: &Attachment,
        result: &Value,
        capability_args: &Value,
        skip: &[&str],
    ) -> Result<()> {
        for p in plugins(list)? {
            if skip.contains(&plugin_type(p)?) {
                continue;
            }
            let conf = derive(list, p, Some(result), capability_args, true)?;
            self.exec(
                plugin_type(p)?,
                "CHECK",
                Some(att),
                conf.to_string().as_bytes(),
            )?
            .ok()?;
        }
        Ok(())
    }

    /// DEL of a configuration list, in reverse order, with the final ADD result.
    pub fn del_list(
        &self,
        list: &Value,
        att: &Attachment,
        result: Option<&Value>,
        capability_args: &Value,
    ) -> Result<()> {
        for p in plugins(list)?.iter().rev() {
            let conf = derive(list, p, result, capability_args, true)?;
            self.exec(
                plugin_type(p)?,
                "DEL",
                Some(att),
                conf.to_string().as_bytes(),
            )?
            .ok()?;
        }
        Ok(())
    }
}

fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list["plugins"]
        .as_array()
        .ok_or_else(|| err!("configuration list has no plugins array: {list}"))
}

fn plugin_type(p: &Value) -> Result<&str> {
    p["type"]
        .as_str()
        .ok_or_else(|| err!("plugin without type: {p}"))
}

/// The request configuration of one plugin (spec section 3, "Deriving request
/// configuration"): the plugin object with `cniVersion` and `name` of the list,
/// `runtimeConfig` from its capabilities, `prevResult`, and no `capabilities`.
fn derive(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    capability_args: &Value,
    attachment: bool,
) -> Result<Value> {
    let mut conf = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| err!("plugin is not an object: {plugin}"))?;
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    conf.insert("name".into(), list["name"].clone());
    let caps = conf.remove("capabilities");
    if attachment {
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = caps {
            for (k, on) in caps {
                if on == json!(true)
                    && let Some(v) = capability_args.get(&k)
                {
                    rc.insert(k, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
    }
    Ok(Value::Object(conf))
}

fn run_with_stdin(mut c: Command, stdin: &[u8], plugin: &str, command: &str) -> Result<PluginRun> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let describe = format!("{plugin} {command}");
    let mut child = c
        .spawn()
        .map_err(|e| err!("cannot start `{}`: {e}", cmd::describe(&c)))?;
    if let Some(mut w) = child.stdin.take() {
        // A plugin may not read its stdin (VERSION): a broken pipe is fine.
        let _ = w.write_all(stdin);
    }
    let out = drain(child.stdout.take());
    let errs = drain(child.stderr.take());
    let status = match cmd::wait_deadline(&mut child, PLUGIN_TIMEOUT)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err!("{describe} did not finish within {PLUGIN_TIMEOUT:?}"));
        }
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&errs.join().unwrap_or_default()).into_owned();
    let json = serde_json::from_str(&stdout).ok();
    Ok(PluginRun {
        success: status.success(),
        stdout,
        stderr,
        json,
        describe,
    })
}

fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// The addresses host-local has reserved in `data_dir` for network `network`: the
/// files named after an IP address.
pub fn host_local_reservations(data_dir: &Path, network: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(data_dir.join(network)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

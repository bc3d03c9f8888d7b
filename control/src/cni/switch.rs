//! Talking to vswitchd for the plugin: attach the host end of a pod's veth as a
//! `pod` port, detach it, look it up; with the daemon's failures mapped to CNI
//! error codes.
//!
//! A daemon that cannot be reached (not running, restarting, refusing connections
//! for a moment) is "try again later" (11): the kubelet retries the sandbox, and by
//! then the DaemonSet has usually restarted it.

use std::path::Path;

use vswitch_proto::{AddPortParams, ErrorCode, PodRef, PortInfo, PortKind, PortMode, PortState};

use super::error::{CniError, CniResult, SWITCH_REFUSED, TRY_AGAIN_LATER};
use crate::client::{CallError, Client};

/// A checked connection to vswitchd.
pub struct Switch {
    client: Client,
}

impl Switch {
    /// Connects and shakes hands, so that "daemon down" is found before anything
    /// is changed.
    pub fn connect(socket: &Path) -> CniResult<Switch> {
        let mut client = Client::connect(socket).map_err(|e| {
            CniError::new(
                TRY_AGAIN_LATER,
                "vswitchd is not reachable",
                format!("{e:#}"),
            )
        })?;
        // Any failure of the first exchange, a refusal included (too many
        // connections at once), is transient from the runtime's point of view.
        client.hello().map_err(|e| {
            CniError::new(TRY_AGAIN_LATER, "vswitchd is not answering", e.to_string())
        })?;
        Ok(Switch { client })
    }

    /// Attaches interface `name` as a pod port of `pod`.
    pub fn attach(&mut self, name: &str, pod: PodRef) -> CniResult<PortInfo> {
        self.client
            .add_port_with(AddPortParams {
                name: name.to_string(),
                kind: PortKind::Pod,
                mode: PortMode::Auto,
                pod: Some(pod),
            })
            .map_err(|e| map_err(e, &format!("attaching {name} to the switch")))
    }

    /// Detaches port `name`; a port that is not there is fine (DEL is idempotent,
    /// and the daemon removes pod ports whose interface vanished by itself).
    pub fn detach(&mut self, name: &str) -> CniResult<()> {
        match self.client.del_port(name) {
            Ok(()) => Ok(()),
            Err(CallError::Remote(r)) if r.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(map_err(e, &format!("detaching {name} from the switch"))),
        }
    }

    /// The port named `name`, if the switch has it.
    pub fn port(&mut self, name: &str) -> CniResult<Option<PortInfo>> {
        Ok(self.ports()?.into_iter().find(|p| p.name == name))
    }

    /// The MTU of the switch's uplink port while it is up (the interface that
    /// carries the overlay), if it has one.
    pub fn uplink_mtu(&mut self) -> CniResult<Option<u32>> {
        Ok(self
            .ports()?
            .into_iter()
            .find(|p| p.kind == PortKind::Uplink && p.state == PortState::Up && p.mtu > 0)
            .map(|p| p.mtu))
    }

    pub fn ports(&mut self) -> CniResult<Vec<PortInfo>> {
        self.client
            .list_ports()
            .map_err(|e| map_err(e, "listing the switch's ports"))
    }
}

/// An error reply is the daemon refusing (ours: 101); a broken connection or a
/// timeout is transient (11).
fn map_err(e: CallError, what: &str) -> CniError {
    match e {
        CallError::Remote(r) => CniError::new(
            SWITCH_REFUSED,
            "vswitchd refused the request",
            format!("{what}: {r}"),
        ),
        other => CniError::new(
            TRY_AGAIN_LATER,
            "vswitchd is not answering",
            format!("{what}: {other}"),
        ),
    }
}

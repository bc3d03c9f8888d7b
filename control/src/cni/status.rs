//! STATUS: can ADD be served? Only if vswitchd answers on its socket, and the IPAM
//! plugin (when it knows STATUS) says it is ready.

use super::config::NetConf;
use super::env::{Command, Env};
use super::error::{CniError, CniResult, PLUGIN_NOT_AVAILABLE};
use super::ipam::Ipam;
use super::switch::Switch;

pub fn status(env: &Env, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    Switch::connect(&conf.socket).map_err(|e| {
        CniError::new(
            PLUGIN_NOT_AVAILABLE,
            "plugin not available: vswitchd is not reachable",
            e.details,
        )
    })?;
    // CNI_PATH is optional for STATUS: without it there is no IPAM plugin to ask.
    if conf.ipam.is_some() && !env.path.is_empty() {
        let ipam = Ipam::new(conf, stdin, &env.path)?;
        if ipam.knows_gc_and_status()? {
            ipam.forward(Command::Status)?;
        }
    }
    Ok(())
}

//! `vsctl apply FILE`: manifests read and translated as the agent's manifest mode
//! does, pushed once as a full sync. The daemon's whole desired state is replaced;
//! a running agent notices the new generation and puts its own state back.

use crate::agent::cluster::{Cluster, NodeSettings};
use crate::agent::manifest::{DocError, ManifestSet};
use crate::agent::syncer::{PART_BUDGET, full_parts};
use crate::client::Client;
use std::path::Path;
use vswitch_proto::{Op, SyncReply, SyncStatus};

#[derive(Debug)]
pub struct ApplySummary {
    pub generation: u64,
    pub objects: usize,
    pub reply: SyncReply,
    /// Bad documents, skipped.
    pub errors: Vec<DocError>,
    pub unsupported: Vec<String>,
}

pub fn apply_once(
    client: &mut Client,
    path: &Path,
    settings: NodeSettings,
) -> anyhow::Result<ApplySummary> {
    let mut set = ManifestSet::new(path);
    let r = set.refresh().map_err(|e| anyhow::anyhow!(e))?;
    let mut cluster = Cluster::new(settings);
    let mut errors = r.errors;
    for e in cluster.replace_all(&set.objects()) {
        errors.push(DocError {
            file: path.to_path_buf(),
            line: 0,
            message: e,
        });
    }
    let state = cluster.build();
    let st: SyncStatus = {
        let v = client.call(Op::SyncStatus)?;
        client.decode(v)?
    };
    let generation = st.generation + 1;
    let mut reply = SyncReply::default();
    for p in full_parts(generation, &state, PART_BUDGET) {
        let v = client.call(Op::SyncFull(p))?;
        reply = client.decode(v)?;
    }
    Ok(ApplySummary {
        generation,
        objects: state.len(),
        reply,
        errors,
        unsupported: r.unsupported,
    })
}

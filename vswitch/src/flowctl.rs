//! Flow-table operations of the control socket: parse the OVS-like text the
//! client sent (errors point at the column), apply bundles, dump, trace.

use crate::Datapath;
use crate::flow::dpaction::{self, DpAction};
use crate::flow::format::{FlowStatsView, format_flow, format_group, format_match};
use crate::flow::parse::{self, PortNames};
use crate::flow::spec::{FlowFilter, Match};
use crate::flow::tables::FlowMod;
use vswitch_proto::{
    DumpFlowsParams, ErrorCode, ErrorReply, FlowEntry, FlowModOp, FlowModsParams, FlowModsReply,
    GroupEntry, TraceParams, TraceReply, TraceTable,
};

/// Port names as the datapath knows them.
struct DpPorts<'a>(&'a Datapath);

impl PortNames for DpPorts<'_> {
    fn port_no(&self, name: &str) -> Option<u32> {
        self.0.port_no(name)
    }
    fn port_name(&self, no: u32) -> Option<String> {
        self.0.port_name(no)
    }
}

fn invalid(msg: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidParams, msg)
}

/// Parses one text change into datapath flow mods.
fn parse_mod(ports: &DpPorts<'_>, op: FlowModOp, text: &str) -> Result<Vec<FlowMod>, String> {
    let render = |e: parse::ParseError| e.render(text);
    Ok(match op {
        FlowModOp::Add => parse::parse_flow(text, ports)
            .map_err(render)?
            .into_iter()
            .map(FlowMod::Add)
            .collect(),
        FlowModOp::Delete => vec![FlowMod::Delete(
            parse::parse_filter(text, ports).map_err(render)?,
        )],
        FlowModOp::DeleteStrict => vec![FlowMod::Delete(
            parse::parse_filter_strict(text, ports).map_err(render)?,
        )],
        FlowModOp::Modify => {
            let Some(at) = text.find("actions=") else {
                return Err("mod-flows needs actions=".into());
            };
            let filter = parse::parse_filter(text[..at].trim_end_matches([',', ' ']), ports)
                .map_err(render)?;
            let actions = parse::parse_flow(&text[at..], ports)
                .map_err(|e| {
                    parse::ParseError {
                        column: e.column + at,
                        message: e.message,
                    }
                    .render(text)
                })?
                .into_iter()
                .next()
                .map(|s| s.actions)
                .unwrap_or_default();
            vec![FlowMod::Modify { filter, actions }]
        }
        FlowModOp::AddGroup => vec![FlowMod::SetGroup(
            parse::parse_group(text, ports).map_err(render)?,
        )],
        FlowModOp::DeleteGroup => {
            let t = text.trim();
            if t.is_empty() || t == "group_id=all" {
                vec![FlowMod::DeleteGroup(None)]
            } else {
                let id = t
                    .strip_prefix("group_id=")
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| format!("expected group_id=N or nothing, got '{t}'"))?;
                vec![FlowMod::DeleteGroup(Some(id))]
            }
        }
    })
}

/// `flow_mods`: parse everything first, then apply as one bundle.
pub fn flow_mods(dp: &mut Datapath, p: FlowModsParams) -> Result<FlowModsReply, ErrorReply> {
    let mut mods = Vec::new();
    {
        let ports = DpPorts(dp);
        for (i, m) in p.mods.iter().enumerate() {
            let parsed = parse_mod(&ports, m.op, &m.spec).map_err(|e| {
                let which = if p.mods.len() > 1 {
                    format!("change {} ({:?}): ", i + 1, m.op)
                } else {
                    String::new()
                };
                invalid(format!("{which}{e}"))
            })?;
            mods.extend(parsed);
        }
    }
    let out = dp
        .flow_mods(mods)
        .map_err(|e| invalid(format!("bundle refused, nothing applied: {e}")))?;
    Ok(FlowModsReply {
        added: out.added,
        replaced: out.replaced,
        deleted: out.deleted,
        modified: out.modified,
        groups_set: out.groups_set,
        groups_deleted: out.groups_deleted,
        version: out.version,
    })
}

/// `dump_flows`.
pub fn dump_flows(dp: &mut Datapath, p: DumpFlowsParams) -> Result<Vec<FlowEntry>, ErrorReply> {
    let ports = DpPorts(dp);
    let mut filter = match &p.filter {
        Some(t) => parse::parse_filter(t, &ports).map_err(|e| invalid(e.render(t)))?,
        None => FlowFilter::default(),
    };
    if p.table.is_some() {
        filter.table = p.table;
    }
    dp.flush_flow_stats();
    let dp = &*dp;
    let ports = DpPorts(dp);
    let now = dp.now_ns();
    let secs = |ns: u64| ns as f64 / 1e9;
    Ok(dp
        .dump_flows(&filter)
        .into_iter()
        .map(|r| {
            let s = &r.spec;
            let last = r.stats.last_hit_ns();
            let view = FlowStatsView {
                duration_s: secs(now.saturating_sub(r.added_ns)),
                packets: r.stats.packets(),
                bytes: r.stats.bytes(),
                idle_age_s: (last > 0).then(|| secs(now.saturating_sub(last))),
            };
            FlowEntry {
                table: s.table,
                priority: s.priority,
                cookie: s.cookie,
                match_: format_match(&s.m, &ports).to_string(),
                actions: crate::flow::format::format_actions(&s.actions, &ports).to_string(),
                idle_timeout: s.idle_timeout,
                hard_timeout: s.hard_timeout,
                n_packets: view.packets,
                n_bytes: view.bytes,
                duration_s: view.duration_s,
                idle_age_s: view.idle_age_s,
                text: format_flow(s, Some(view), &ports).to_string(),
            }
        })
        .collect())
}

/// `dump_groups`.
pub fn dump_groups(dp: &Datapath) -> Vec<GroupEntry> {
    let ports = DpPorts(dp);
    dp.groups()
        .iter()
        .map(|g| GroupEntry {
            group_id: g.id,
            text: format_group(g, &ports).to_string(),
        })
        .collect()
}

/// `trace`: the packet is given as a match with exact values.
pub fn trace(dp: &mut Datapath, p: TraceParams) -> Result<TraceReply, ErrorReply> {
    let filter = {
        let ports = DpPorts(dp);
        parse::parse_filter(&p.spec, &ports).map_err(|e| invalid(e.render(&p.spec)))?
    };
    let key = filter.m.value;
    let (tr, trace, probes) = dp.trace(&key);
    let ports = DpPorts(dp);
    let tables = trace
        .steps
        .iter()
        .map(|s| TraceTable {
            table: s.table,
            depth: s.depth,
            flow: s
                .rule
                .as_ref()
                .map(|r| format_flow(&r.spec, None, &ports).to_string()),
            notes: s.notes.clone(),
        })
        .collect();
    let megaflow = Match {
        value: key.masked(&tr.consulted),
        mask: tr.consulted,
    };
    Ok(TraceReply {
        packet: format_match(&filter.m, &ports).to_string(),
        tables,
        datapath_actions: tr.actions.iter().map(DpAction::to_string).collect(),
        verdict: dpaction::verdict(&tr.actions).to_string(),
        megaflow: format_match(&megaflow, &ports).to_string(),
        emc_hit: probes.iter().map(|p| p.emc).collect(),
        megaflow_hit: probes.iter().map(|p| p.megaflow).collect(),
        error: tr.error,
    })
}

/// Parses a capture filter: a flow match (`udp,tp_dst=53`), port names allowed.
pub fn parse_filter(dp: &Datapath, text: &str) -> Result<Match, String> {
    parse::parse_match(text, &DpPorts(dp)).map_err(|e| e.render(text))
}

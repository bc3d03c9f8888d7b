//! The flow pipeline: flow keys and fields, flow specs and their text syntax, the
//! tuple-space classifier, the per-worker caches, and action execution.
//!
//! See `docs/pipeline.md` for the tables the switch itself uses.

pub mod classifier;
pub mod emc;
pub mod extract;
pub mod field;
pub mod format;
pub mod key;
pub mod layout;
pub mod megaflow;
pub mod parse;
pub mod rewrite;
pub mod spec;

pub use classifier::Classifier;
pub use emc::{ExactMatchCache, hash_key};
pub use field::Field;
pub use format::{FlowStatsView, format_actions, format_flow, format_group, format_match};
pub use key::{KEY_WORDS, Key};
pub use megaflow::{MegaflowCache, MegaflowId};
pub use parse::{
    NoPortNames, ParseError, PortNames, parse_filter, parse_filter_strict, parse_flow, parse_group,
    parse_match,
};
pub use spec::{Action, FlowFilter, FlowSpec, GroupSpec, Match};
pub mod cache;
pub mod dpaction;
pub mod rule;
pub mod tables;
pub mod xlate;

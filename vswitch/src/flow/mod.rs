//! The flow pipeline: flow keys and fields, flow specs and their text syntax, the
//! tuple-space classifier, the per-worker caches, and action execution.
//!
//! See `docs/pipeline.md` for the tables the switch itself uses.

pub mod field;
pub mod key;
pub mod spec;

pub use field::Field;
pub use key::{KEY_WORDS, Key};
pub use spec::{Action, FlowFilter, FlowSpec, GroupSpec, Match};
pub mod cache;
pub mod classifier;
pub mod dpaction;
pub mod emc;
pub mod extract;
pub mod megaflow;
pub mod rewrite;
pub mod rule;
pub mod tables;
pub mod xlate;

//! The flow pipeline: flow keys and fields, flow specs and their text syntax, the
//! tuple-space classifier, the per-worker caches, and action execution.
//!
//! See `docs/pipeline.md` for the tables the switch itself uses.

pub mod extract;
pub mod field;
pub mod key;
pub mod rewrite;
pub mod spec;

pub use field::Field;
pub use key::{KEY_WORDS, Key};
pub use spec::{Action, FlowFilter, FlowSpec, GroupSpec, Match};

//! The flow pipeline: flow keys and fields, flow specs and their text syntax, the
//! tuple-space classifier, the per-worker caches, and action execution.
//!
//! See `docs/pipeline.md` for the tables the switch itself uses.

pub mod classifier;
pub mod emc;
pub mod field;
pub mod key;
pub mod megaflow;
pub mod spec;

pub use classifier::Classifier;
pub use emc::{ExactMatchCache, hash_key};
pub use field::Field;
pub use key::{KEY_WORDS, Key};
pub use megaflow::{MegaflowCache, MegaflowId};
pub use spec::{Action, FlowFilter, FlowSpec, GroupSpec, Match};

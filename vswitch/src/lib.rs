
pub mod control;

//! Kubernetes Services without iptables: the realizer that turns Services and
//! Endpoints into flows (tables 10, 11, 15, 50, 60) and Maglev frontends, and the
//! load-balancing state the `service_lb` action reads. See docs/services.md.

pub mod lb;
pub mod maglev;
pub mod realize;

pub use lb::{LbTable, SharedLb};

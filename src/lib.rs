//! Test and benchmark support shared by `tests/` and `benches/`: network namespaces,
//! veth pairs and daemon processes that clean up after themselves.

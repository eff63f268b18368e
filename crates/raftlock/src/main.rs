//! `raftlock`: run a lock server, a local demo cluster, or talk to a cluster.
fn main() {}

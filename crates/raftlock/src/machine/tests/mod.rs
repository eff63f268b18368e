//! The state machine's rules, entry by entry, and property tests over random logs.

mod harness;

mod dedup;
mod input;
mod locks;
mod props;
mod sessions;
mod waiting;

//! Vesta's load generators (the `vesta-bench` binary) and the pieces they share, kept in a library so
//! that `cargo test --workspace --lib` runs their unit tests too.

pub mod histogram;
pub mod hot_counter;
pub mod rate;
pub mod resp;
pub mod sequence;

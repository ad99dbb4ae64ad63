//! No code: this crate exists for its dependency list (see its Cargo.toml), which makes a member built
//! alone resolve RocksDB's build closure exactly as the workspace's build does.

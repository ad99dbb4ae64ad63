// Empty on purpose: without a build script Cargo ignores this crate's build-dependencies, and they are
// what unifies bindgen's features for every member (see Cargo.toml).
fn main() {}

//! A real etcd for the tests of clusters kept in etcd (`vesta_testkit::etcd`), and `vesta admin`
//! against it.

use std::process::{Command, Output};

pub use vesta_testkit::etcd::Etcd;

pub fn admin(etcd: &Etcd, cluster: &str, args: &[&str]) -> Output {
    // The same binary as the processes the testkit starts (`VESTA_BIN` pins it).
    let output = Command::new(vesta_testkit::vesta_bin())
        .args(["admin", "--etcd", &etcd.url, "--cluster", cluster])
        .args(args)
        .output()
        .expect("run vesta admin");
    eprintln!(
        "$ vesta admin {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

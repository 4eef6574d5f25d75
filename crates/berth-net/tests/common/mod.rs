//! Helpers shared by the root integration tests: unique names, `ip` output, and guards
//! that remove what a test made, by name, even when it panics.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Child, Command};

use berth_net::ip::IP_BIN;

/// 8 random hex digits, for names no other test (or test process) uses.
pub fn hex8() -> String {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Stdout of `ip ARGS` (empty if it failed).
pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new(IP_BIN).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS` and panics with its stderr if it fails.
pub fn ip_ok(args: &[&str]) {
    let out = Command::new(IP_BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An interface in the root namespace deleted on drop.
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new(IP_BIN)
            .args(["link", "del", "dev", &self.0])
            .output();
    }
}

/// A named network namespace deleted on drop (with every interface inside it).
pub struct NetnsGuard(pub String);

impl NetnsGuard {
    /// Makes the namespace with loopback up.
    pub fn new(name: String) -> Self {
        ip_ok(&["netns", "add", &name]);
        let g = Self(name);
        ip_ok(&["-n", &g.0, "link", "set", "lo", "up"]);
        g
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new(IP_BIN)
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// A process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

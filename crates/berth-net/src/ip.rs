//! The one place that runs iproute2's `ip`: single commands and `ip -batch -` scripts.
//!
//! Why `ip` and not netlink from Rust: the crate stays free of `unsafe` and of a netlink
//! stack, and `ip -batch -` runs many commands in one process, which is most of the speed
//! netlink would give (see docs/net.md for the measured task set-up time). Every command
//! line is built by pure functions elsewhere and carries the step it performs and the
//! object it acts on, so a failure in line N of a batch is reported as that step.

use std::io::Write;
use std::process::{Command, Stdio};

/// iproute2's `ip` on Debian.
pub const IP_BIN: &str = "/usr/sbin/ip";

/// A failed `ip` invocation: which step, on which interface or namespace, and what `ip`
/// said on stderr.
#[derive(Debug, thiserror::Error)]
pub enum IpError {
    #[error("{step} ({object}): ip failed ({status}): {stderr}")]
    Failed {
        step: &'static str,
        object: String,
        status: String,
        stderr: String,
    },
    #[error("{step} ({object}): could not run {IP_BIN}")]
    Spawn {
        step: &'static str,
        object: String,
        #[source]
        source: std::io::Error,
    },
}

/// One line of an `ip` batch script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// What the line does, e.g. "add veth pair".
    pub step: &'static str,
    /// The interface or namespace it acts on.
    pub object: String,
    /// The arguments, as `ip` would take them after the options (`link set x up`).
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new(step: &'static str, object: &str, args: &[&str]) -> Self {
        Self {
            step,
            object: object.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

/// A script for `ip [-n NETNS] -batch -`; `ip` stops at the first failing line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Run inside this named namespace (`ip -n`), or in the caller's.
    pub netns: Option<String>,
    pub cmds: Vec<Cmd>,
}

/// A batch that failed: the error and the 0-based index of the failing line, when `ip`
/// named it (it does as `Command failed -:N`).
#[derive(Debug)]
pub struct BatchFailure {
    pub line: Option<usize>,
    pub error: IpError,
}

impl Batch {
    /// The script text: one command per line. All arguments are validated names,
    /// addresses or numbers, so they need no quoting.
    pub fn script(&self) -> String {
        self.cmds.iter().map(|c| c.args.join(" ") + "\n").collect()
    }

    /// The `ip` options before `-batch -`.
    pub fn options(&self) -> Vec<String> {
        let mut opts = Vec::new();
        if let Some(ns) = &self.netns {
            opts.extend(["-n".to_owned(), ns.clone()]);
        }
        opts.extend(["-batch".to_owned(), "-".to_owned()]);
        opts
    }

    /// Runs the script. Blocking.
    pub fn run(&self) -> Result<(), BatchFailure> {
        if self.cmds.is_empty() {
            return Ok(());
        }
        let first = &self.cmds[0];
        let spawn_err = |source| BatchFailure {
            line: None,
            error: IpError::Spawn {
                step: first.step,
                object: first.object.clone(),
                source,
            },
        };
        let mut child = Command::new(IP_BIN)
            .args(self.options())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let script = self.script();
        let write = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes());
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            // A write error with a successful exit cannot happen: `ip` read everything.
            return write.map_err(spawn_err);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let line = failed_line(&stderr).filter(|&i| i < self.cmds.len());
        // `ip` exits without naming the line when an argument is refused while parsing
        // (`Error: argument "X" is wrong: ...`); the first line using X is then the
        // best guess for the step, but `line` stays unknown for the caller's rollback.
        let guess = || {
            let arg = wrong_argument(&stderr)?;
            self.cmds
                .iter()
                .position(|c| c.args.iter().any(|a| a == arg))
        };
        let at = line.or_else(guess).map_or(first, |i| &self.cmds[i]);
        Err(BatchFailure {
            line,
            error: IpError::Failed {
                step: at.step,
                object: at.object.clone(),
                status: out.status.to_string(),
                stderr,
            },
        })
    }
}

/// The 0-based index of the failing line from `ip -batch`'s `Command failed -:N` (1-based).
pub fn failed_line(stderr: &str) -> Option<usize> {
    let rest = stderr.rsplit_once("Command failed -:")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<usize>().ok()?.checked_sub(1)
}

/// The argument `ip` refused, from `Error: argument "X" is wrong: ...`.
pub fn wrong_argument(stderr: &str) -> Option<&str> {
    let rest = stderr.split_once("argument \"")?.1;
    let (arg, rest) = rest.split_once('"')?;
    rest.starts_with(" is wrong").then_some(arg)
}

/// Runs one `ip` command and returns its stdout. Blocking.
pub fn run(step: &'static str, object: &str, args: &[&str]) -> Result<String, IpError> {
    let out = Command::new(IP_BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IpError::Spawn {
            step,
            object: object.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(IpError::Failed {
            step,
            object: object.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip -batch` failure messages map to the failing line.
    #[test]
    fn parses_failed_line() {
        assert_eq!(
            failed_line("Cannot find device \"x\"\nCommand failed -:2"),
            Some(1)
        );
        assert_eq!(failed_line("Command failed -:1\n"), Some(0));
        assert_eq!(failed_line("Command failed -:0"), None);
        assert_eq!(failed_line("Cannot open network namespace \"x\""), None);
        assert_eq!(failed_line("Command failed -:"), None);
    }

    /// Argument errors name the refused argument.
    #[test]
    fn parses_wrong_argument() {
        let e = "Error: argument \"br9\" is wrong: Device does not exist";
        assert_eq!(wrong_argument(e), Some("br9"));
        assert_eq!(wrong_argument("Error: argument \"x\""), None);
        assert_eq!(wrong_argument("Cannot find device"), None);
    }

    /// Scripts are one command per line; `-n` comes before `-batch`.
    #[test]
    fn script_and_options() {
        let b = Batch {
            netns: Some("ns1".into()),
            cmds: vec![
                Cmd::new("bring up loopback", "lo", &["link", "set", "lo", "up"]),
                Cmd::new("bring up eth0", "eth0", &["link", "set", "eth0", "up"]),
            ],
        };
        assert_eq!(b.script(), "link set lo up\nlink set eth0 up\n");
        assert_eq!(b.options(), ["-n", "ns1", "-batch", "-"]);
    }
}

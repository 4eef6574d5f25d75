//! The `runc` driver: one method per runc subcommand berth uses, each a child process
//! with its stderr kept for the error (runc(8); `runc --root DIR` keeps berth's
//! containers apart from anyone else's).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// What went wrong calling runc.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("cannot execute {binary}: is runc installed?")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runc {command} {id} failed: {stderr}")]
    Failed {
        command: &'static str,
        id: String,
        stderr: String,
    },
    #[error("runc {command} {id} printed output berth cannot read")]
    Output {
        command: &'static str,
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A container's state as `runc state` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct State {
    pub id: String,
    /// created, running, paused or stopped.
    pub status: String,
    pub pid: i32,
    pub bundle: PathBuf,
}

/// A runc binary and the state root berth keeps its containers in.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Runc {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// A command with `--root` set; stdin closed.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root).stdin(Stdio::null());
        c
    }

    /// Runs `c` to its end with stderr captured.
    fn run(&self, c: &mut Command) -> Result<std::process::Output, RuncError> {
        c.stderr(Stdio::piped())
            .output()
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })
    }

    fn output(&self, command: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>, RuncError> {
        let out = self.run(
            self.command()
                .arg(command)
                .args(args)
                .arg(id)
                .stdout(Stdio::piped()),
        )?;
        if !out.status.success() {
            return Err(RuncError::Failed {
                command,
                id: id.to_string(),
                stderr: clean_stderr(&out.stderr),
            });
        }
        Ok(out.stdout)
    }

    /// `runc state ID`; `None` when runc does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<State>, RuncError> {
        match self.output("state", id, &[]) {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|source| RuncError::Output {
                    command: "state",
                    id: id.to_string(),
                    source,
                }),
            Err(RuncError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `runc list` (every container under this root).
    pub fn list(&self) -> Result<Vec<State>, RuncError> {
        let out = self.output("list", "", &["--format", "json"])?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&out).map_err(|source| RuncError::Output {
            command: "list",
            id: String::new(),
            source,
        })
    }

    /// `runc kill [--all] ID SIGNAL`. A container that is already gone is not an error.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuncError> {
        let mut c = self.command();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        let out = self.run(c.arg(id).arg(signal).stdout(Stdio::null()))?;
        let stderr = clean_stderr(&out.stderr);
        if out.status.success()
            || stderr.contains("not running")
            || stderr.contains("does not exist")
            || stderr.contains("process already finished")
        {
            return Ok(());
        }
        Err(RuncError::Failed {
            command: "kill",
            id: id.to_string(),
            stderr,
        })
    }

    /// `runc delete --force ID`; a container runc does not know is not an error.
    pub fn delete(&self, id: &str) -> Result<(), RuncError> {
        match self.output("delete", id, &["--force"]) {
            Ok(_) => Ok(()),
            Err(RuncError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The command line of `runc run --detach` (the shim runs it with its own stdio);
    /// runc's own messages go to `log` as JSON lines, apart from the container's output.
    pub fn run_detached_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
    ) -> Command {
        let mut c = self.command();
        c.arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        c
    }

    /// `runc exec` of `args` in container `id`, with a process spec in the bundle's
    /// environment; returns (exit code, combined output). The caller bounds the time.
    pub fn exec_command(&self, id: &str, env: &[String], args: &[String]) -> Command {
        let mut c = self.command();
        c.arg("exec");
        for e in env {
            c.arg("--env").arg(e);
        }
        c.arg(id).args(args);
        c
    }
}

/// runc's logrus lines (`time="..." level=error msg="..."`) reduced to their messages.
pub fn clean_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let msgs: Vec<String> = text
        .lines()
        .map(|l| match l.find("msg=") {
            Some(i) => {
                let m = &l[i + 4..];
                let m = m.strip_prefix('"').unwrap_or(m);
                let m = m.rsplit_once('"').map_or(m, |(a, _)| a);
                m.replace("\\\"", "\"").replace("\\n", " ")
            }
            None => l.to_string(),
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    msgs.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// runc's structured log lines become the message a person reads.
    #[test]
    fn stderr_messages_extracted() {
        let s = br#"time="2026-11-25T08:00:00Z" level=error msg="container \"x\" does not exist""#;
        assert_eq!(clean_stderr(s), "container \"x\" does not exist");
        assert_eq!(clean_stderr(b"plain failure\n"), "plain failure");
    }
}

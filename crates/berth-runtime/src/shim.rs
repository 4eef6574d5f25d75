//! The shim: one small process per container that outlives the agent (as
//! containerd's shim and podman's conmon do). It makes itself the child subreaper,
//! runs `runc run --detach` so that the container's init becomes its child, copies
//! the container's stdout and stderr into the rotated log, waits for the exit, reads
//! the cgroup for an OOM kill, and leaves the outcome in `exit.json`. Restarting or
//! killing the agent never touches it, so it never stops a container.
//!
//! Files in the container directory (which is also the OCI bundle):
//! `config.json` (the spec), `pid` (the container's init pid, written by runc),
//! `shim.pid`, `runc.log`, `container.log[.N]`, `exit.json`.
//! On stdout the shim prints `started PID`, `failed` or `exited` lines as the
//! container goes, so a waiting agent wakes at once.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::logs::{self, Event, LineSplitter};
use crate::runc::Runc;

/// How a container ended (the shim's `exit.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Whether runc started the container at all.
    pub started: bool,
    /// Exit code; a container killed by a signal reports 128 + the signal, as Docker does.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer acted in the container's cgroup.
    pub oom_killed: bool,
    pub memory_max_usage_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Why the container did not start (runc's message).
    pub error: Option<String>,
    /// Unix time in milliseconds.
    pub finished_at_ms: u64,
}

/// What the shim is told.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The container directory (the OCI bundle).
    pub dir: PathBuf,
    /// runc's container id.
    pub id: String,
    pub runc: Runc,
    pub cgroups_path: String,
}

/// Errors of the shim's own I/O (a container that fails is an [`ExitStatus`], not this).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot become the child subreaper")]
    Subreaper(#[source] std::io::Error),
    #[error("cannot create the output pipes")]
    Pipe(#[source] std::io::Error),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `value` as JSON to `path` atomically (temp file, rename): a reader sees the
/// old or the new document, never part of one, whenever the writer dies.
///
/// No fsync: these records (the shim's exit, the agent's task records) describe
/// processes of this boot. What they protect against is a process killed mid-write
/// (kill -9 of the agent), which the page cache survives; a power loss ends the
/// containers too, and the agent finds nothing of them to re-adopt. Skipping the
/// fsync takes milliseconds off every step of a task's start.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// The container's `exit.json`, once the shim wrote it.
pub fn read_exit(dir: &Path) -> Option<ExitStatus> {
    let text = std::fs::read(dir.join("exit.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The container's init pid, once runc wrote it.
pub fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The error messages of runc's JSON log (`--log-format json`).
pub fn runc_log_errors(text: &str) -> String {
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect();
    if msgs.is_empty() {
        text.lines().last().unwrap_or("runc failed").to_string()
    } else {
        msgs.join("; ")
    }
}

fn notify(line: &str) {
    // The agent may be gone (restarted): a closed pipe is fine.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn copy_stream(
    mut r: impl Read + Send + 'static,
    stream: &'static str,
    log: Arc<Mutex<logs::Writer>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut split = LineSplitter::default();
        let mut buf = vec![0u8; 64 * 1024];
        let emit = |lines: Vec<String>| {
            let time = now_ms();
            let mut w = log.lock().unwrap_or_else(|p| p.into_inner());
            for l in lines {
                let _ = w.write(&Event {
                    time,
                    stream: stream.into(),
                    log: l,
                });
            }
        };
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => emit(split.push(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        emit(split.finish().into_iter().collect());
    })
}

/// Runs the container to its end; returns the outcome it also wrote to `exit.json`.
pub fn run(cfg: &ShimConfig) -> Result<ExitStatus, ShimError> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| ShimError::Subreaper(e.into()))?;
    let write = |name: &str, data: String| {
        let path = cfg.dir.join(name);
        std::fs::write(&path, data).map_err(|source| ShimError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    write("shim.pid", std::process::id().to_string())?;
    let log = Arc::new(Mutex::new(
        logs::Writer::open(&cfg.dir.join("container.log")).map_err(|source| ShimError::Write {
            path: cfg.dir.join("container.log").display().to_string(),
            source,
        })?,
    ));
    let (out_r, out_w) = std::io::pipe().map_err(ShimError::Pipe)?;
    let (err_r, err_w) = std::io::pipe().map_err(ShimError::Pipe)?;
    let runc_log = cfg.dir.join("runc.log");
    let mut cmd = cfg
        .runc
        .run_detached_command(&cfg.id, &cfg.dir, &cfg.dir.join("pid"), &runc_log);
    cmd.stdout(out_w).stderr(err_w);
    let status = cmd.status();
    drop(cmd); // our copies of the write ends: EOF comes when the container's close
    let out_t = copy_stream(out_r, "stdout", log.clone());
    let err_t = copy_stream(err_r, "stderr", log.clone());
    let pid = match status {
        Ok(s) if s.success() => read_pid(&cfg.dir),
        Ok(_) => None,
        Err(e) => {
            let _ = std::fs::write(
                &runc_log,
                format!("{{\"level\":\"error\",\"msg\":\"cannot execute runc: {e}\"}}\n"),
            );
            None
        }
    };
    let Some(pid) = pid else {
        let text = std::fs::read_to_string(&runc_log).unwrap_or_default();
        let exit = ExitStatus {
            started: false,
            error: Some(runc_log_errors(&text)),
            finished_at_ms: now_ms(),
            ..ExitStatus::default()
        };
        let _ = out_t.join();
        let _ = err_t.join();
        write_exit(cfg, &exit)?;
        notify("failed");
        return Ok(exit);
    };
    notify(&format!("started {pid}"));
    let mut exit = ExitStatus {
        started: true,
        ..ExitStatus::default()
    };
    loop {
        // Any child (`wait`, not `waitpid(None)`, which is our process group only).
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((p, st))) => {
                if p.as_raw_nonzero().get() != pid {
                    continue; // an orphan of the container's reparented to us
                }
                if let Some(code) = st.exit_status() {
                    exit.exit_code = Some(code);
                } else if let Some(sig) = st.terminating_signal() {
                    exit.signal = Some(sig);
                    exit.exit_code = Some(128 + sig);
                }
                break;
            }
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => {
                // Not our child after all (should not happen): poll until it is gone.
                while rustix::process::test_kill_process(
                    rustix::process::Pid::from_raw(pid).expect("runc wrote a positive pid"),
                )
                .is_ok()
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                break;
            }
        }
    }
    let _ = out_t.join();
    let _ = err_t.join();
    let stats = Cgroup::new(&cfg.cgroups_path).stats();
    exit.oom_killed = stats.oom_kills > 0;
    exit.memory_max_usage_bytes = stats.memory_max_usage_bytes;
    exit.memory_limit_bytes = stats.memory_limit_bytes;
    exit.finished_at_ms = now_ms();
    write_exit(cfg, &exit)?;
    notify("exited");
    Ok(exit)
}

fn write_exit(cfg: &ShimConfig, exit: &ExitStatus) -> Result<(), ShimError> {
    let path = cfg.dir.join("exit.json");
    write_json_atomic(&path, exit).map_err(|source| ShimError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// runc's JSON log is reduced to its error messages.
    #[test]
    fn runc_errors() {
        let t = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n";
        assert_eq!(
            runc_log_errors(t),
            "exec: \"nope\": executable file not found in $PATH"
        );
    }
}

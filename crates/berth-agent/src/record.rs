//! What the agent remembers about each task on disk (`tasks/<id>/task.json`), so
//! that a restarted agent re-adopts what runs instead of stopping it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containers::Container;
use crate::control::AssignedTask;
use crate::plan::{Health, Phase, StopCode};

/// The task's network as the agent made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRecord {
    /// `awsvpc`, `bridge`, `host` or `none`.
    pub mode: String,
    /// The network namespace (absent in host mode).
    pub netns: Option<String>,
    pub host_veth: Option<String>,
    /// The task's address (awsvpc and bridge).
    pub ip: Option<String>,
    pub gateway: Option<String>,
    /// Host port mappings: (host port, container port, protocol, proxy pid).
    pub port_proxies: Vec<(u16, u16, String, Option<u32>)>,
}

/// One container of the task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// runc's id.
    pub runtime_id: String,
    pub dir: PathBuf,
    pub cgroups_path: String,
    /// The secret path segment of its metadata endpoint.
    pub token: String,
    pub phase: Phase,
    pub health: Health,
    /// Set once the image is pulled and the definition merged.
    pub spec: Option<Container>,
    pub image_digest: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

/// Where the task is in the agent's own steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    New,
    Networked,
    Pulled,
    Supervising,
    Finished,
}

/// Everything the agent keeps about a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task: AssignedTask,
    pub stage: Stage,
    pub net: Option<NetRecord>,
    pub containers: Vec<ContainerRecord>,
    pub stop: Option<(StopCode, String)>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// The last status reported (PROVISIONING .. STOPPED).
    pub last_status: String,
}

impl TaskRecord {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("task.json")
    }

    pub fn load(dir: &Path) -> Option<TaskRecord> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Saves atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        berth_runtime::shim::write_json_atomic(&Self::path(dir), self)
    }
}

//! From an ECS container definition and its image's config to what the runtime needs
//! (pure): the command line as Docker merges ENTRYPOINT/CMD with the definition's
//! `entryPoint`/`command`, the environment, limits, health check, dependencies and ports.

use serde_json::Value;

use crate::plan::Condition;

/// ECS's default time between SIGTERM and SIGKILL, in seconds.
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 30;
/// Largest `stopTimeout` ECS accepts, in seconds.
pub const MAX_STOP_TIMEOUT_SECS: u64 = 120;
/// Docker's PATH when an image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container health check (ECS `HealthCheck`), times in seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// What runs inside the container: exec form, or `/bin/sh -c CMD` for CMD-SHELL.
    pub command: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u32,
    pub start_period: u64,
}

/// A port mapping of the definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub container_port: u16,
    /// 0 or absent: dynamic (bridge mode) or equal to the container port.
    pub host_port: u16,
    pub protocol: String,
}

/// One container as the agent runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub essential: bool,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user`, `uid`, `user:group` or `uid:gid` (resolved against the image's files later).
    pub user: String,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
    pub readonly_rootfs: bool,
    pub hostname: Option<String>,
    pub health_check: Option<HealthCheck>,
    pub depends_on: Vec<(String, Condition)>,
    pub stop_timeout_secs: u64,
    pub ports: Vec<Port>,
}

/// A definition berth cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("container {container}: no command: the image has no ENTRYPOINT or CMD and the definition sets no entryPoint or command")]
    NoCommand { container: String },
    #[error("container {container}: {message}")]
    Invalid { container: String, message: String },
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The image config fields the merge needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// Docker's merge (moby `daemon/create.go`, `merge`): a definition `entryPoint`
/// replaces the image's ENTRYPOINT and drops its CMD; a `command` replaces CMD.
pub fn command_line(def: &Value, image: &ImageDefaults) -> Vec<String> {
    let entry = strings(&def["entryPoint"]).filter(|e| !e.is_empty());
    let command = strings(&def["command"]).filter(|c| !c.is_empty());
    let mut args = entry.clone().unwrap_or_else(|| image.entrypoint.clone());
    match (command, entry) {
        (Some(c), _) => args.extend(c),
        (None, None) => args.extend(image.cmd.iter().cloned()),
        (None, Some(_)) => {}
    }
    args
}

/// The environment: the image's, then the definition's `environment` (which wins),
/// then `extra` (berth's own variables), with a default PATH.
pub fn environment(def: &Value, image: &ImageDefaults, extra: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    if let Some(list) = def["environment"].as_array() {
        for e in list {
            if let Some(k) = e["name"].as_str() {
                set(k, e["value"].as_str().unwrap_or(""));
            }
        }
    }
    for (k, v) in extra {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn health_check(name: &str, v: &Value) -> Result<Option<HealthCheck>, ContainerError> {
    if v.is_null() {
        return Ok(None);
    }
    let bad = |m: &str| ContainerError::Invalid {
        container: name.to_string(),
        message: m.to_string(),
    };
    let cmd = strings(&v["command"]).unwrap_or_default();
    let command = match cmd.split_first() {
        Some((k, rest)) if k == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((k, rest)) if k == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => {
            return Err(bad(
                "healthCheck.command must be [\"CMD\", ...] or [\"CMD-SHELL\", \"...\"]",
            ))
        }
    };
    Ok(Some(HealthCheck {
        command,
        interval: num(&v["interval"]).unwrap_or(30),
        timeout: num(&v["timeout"]).unwrap_or(5),
        retries: num(&v["retries"]).unwrap_or(3) as u32,
        start_period: num(&v["startPeriod"]).unwrap_or(0),
    }))
}

/// One container from its definition and its image's defaults.
pub fn container(
    def: &Value,
    image: &ImageDefaults,
    extra_env: &[(String, String)],
) -> Result<Container, ContainerError> {
    let name = def["name"].as_str().unwrap_or_default().to_string();
    let args = command_line(def, image);
    if args.is_empty() {
        return Err(ContainerError::NoCommand { container: name });
    }
    let mut depends_on = Vec::new();
    for d in def["dependsOn"].as_array().into_iter().flatten() {
        let target = d["containerName"].as_str().unwrap_or_default().to_string();
        let cond = d["condition"]
            .as_str()
            .and_then(Condition::parse)
            .ok_or_else(|| ContainerError::Invalid {
                container: name.clone(),
                message: format!(
                    "dependsOn {target}: condition must be START, COMPLETE, SUCCESS or HEALTHY"
                ),
            })?;
        depends_on.push((target, cond));
    }
    let ports = def["portMappings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                container_port: u16::try_from(num(&p["containerPort"])?).ok()?,
                host_port: num(&p["hostPort"])
                    .and_then(|h| u16::try_from(h).ok())
                    .unwrap_or(0),
                protocol: p["protocol"].as_str().unwrap_or("tcp").to_string(),
            })
        })
        .collect();
    let working_dir = def["workingDirectory"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| image.working_dir.clone());
    Ok(Container {
        health_check: health_check(&name, &def["healthCheck"])?,
        image: def["image"].as_str().unwrap_or_default().to_string(),
        essential: def["essential"].as_bool().unwrap_or(true),
        env: environment(def, image, extra_env),
        cwd: if working_dir.is_empty() {
            "/".into()
        } else {
            working_dir
        },
        user: def["user"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| image.user.clone()),
        cpu: num(&def["cpu"]).filter(|&c| c > 0),
        memory: num(&def["memory"]),
        memory_reservation: num(&def["memoryReservation"]),
        readonly_rootfs: def["readonlyRootFilesystem"].as_bool().unwrap_or(false),
        hostname: def["hostname"].as_str().map(str::to_string),
        stop_timeout_secs: num(&def["stopTimeout"])
            .unwrap_or(DEFAULT_STOP_TIMEOUT_SECS)
            .min(MAX_STOP_TIMEOUT_SECS),
        depends_on,
        ports,
        args,
        name,
    })
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`) with the image's
/// `/etc/passwd` and `/etc/group` contents (`None` when the image has none).
/// Returns (uid, gid, supplementary gids).
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32, Vec<u32>), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .unwrap_or("")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let group_entries: Vec<Vec<&str>> = group
        .unwrap_or("")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let (uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(n) = u.parse::<u32>() {
        let e = passwd_entries.iter().find(|f| f[2] == u);
        (
            n,
            e.and_then(|f| f[3].parse().ok()).unwrap_or(0),
            e.map(|f| f[0].to_string()),
        )
    } else {
        let e = passwd_entries.iter().find(|f| f[0] == u).ok_or_else(|| {
            format!("unable to find user {u}: no matching entries in passwd file")
        })?;
        (
            e[2].parse()
                .map_err(|_| format!("bad uid for {u} in /etc/passwd"))?,
            e[3].parse()
                .map_err(|_| format!("bad gid for {u} in /etc/passwd"))?,
            Some(u.to_string()),
        )
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let extra = match name {
        Some(n) => group_entries
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&x| x != gid)
            .collect(),
        None => vec![],
    };
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> ImageDefaults {
        ImageDefaults {
            env: vec!["PATH=/bin".into(), "A=image".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["--default".into()],
            working_dir: "/app".into(),
            user: "".into(),
        }
    }

    /// Docker's merge of ENTRYPOINT/CMD with entryPoint/command.
    #[test]
    fn command_merge() {
        let i = image();
        assert_eq!(command_line(&json!({}), &i), ["/entry", "--default"]);
        assert_eq!(
            command_line(&json!({"command": ["x"]}), &i),
            ["/entry", "x"]
        );
        assert_eq!(
            command_line(&json!({"entryPoint": ["/other"]}), &i),
            ["/other"]
        );
        assert_eq!(
            command_line(
                &json!({"entryPoint": ["sh", "-c"], "command": ["echo"]}),
                &i
            ),
            ["sh", "-c", "echo"]
        );
    }

    /// The definition's environment wins over the image's; berth's variables are added.
    #[test]
    fn environment_merge() {
        let env = environment(
            &json!({"environment": [{"name": "A", "value": "def"}, {"name": "B", "value": "b"}]}),
            &image(),
            &[("ECS_X".into(), "1".into())],
        );
        assert_eq!(env, ["PATH=/bin", "A=def", "B=b", "ECS_X=1"]);
        let env = environment(&json!({}), &ImageDefaults::default(), &[]);
        assert_eq!(env, [format!("PATH={DEFAULT_PATH}")]);
    }

    /// Health checks: CMD is exec form, CMD-SHELL runs in sh; ECS defaults apply.
    #[test]
    fn health_checks() {
        let c = container(
            &json!({"name": "web", "healthCheck": {"command": ["CMD-SHELL", "test -f /ok"], "interval": 5}}),
            &image(),
            &[],
        )
        .unwrap();
        let h = c.health_check.unwrap();
        assert_eq!(h.command, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period),
            (5, 5, 3, 0)
        );
        let e = container(
            &json!({"name": "w", "healthCheck": {"command": ["ls"]}}),
            &image(),
            &[],
        );
        assert!(matches!(e, Err(ContainerError::Invalid { .. })));
    }

    /// A container with nothing to run is refused with its name.
    #[test]
    fn no_command() {
        let e = container(&json!({"name": "x"}), &ImageDefaults::default(), &[]).unwrap_err();
        assert_eq!(
            e,
            ContainerError::NoCommand {
                container: "x".into()
            }
        );
    }

    /// Users resolve by name or number against the image's passwd and group files.
    #[test]
    fn users() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1001:\nextra:x:2000:app\n";
        assert_eq!(
            resolve_user("", Some(passwd), Some(group)),
            Ok((0, 0, vec![]))
        );
        assert_eq!(
            resolve_user("app", Some(passwd), Some(group)),
            Ok((1000, 1001, vec![2000]))
        );
        assert_eq!(
            resolve_user("1000", Some(passwd), Some(group)),
            Ok((1000, 1001, vec![2000]))
        );
        assert_eq!(resolve_user("5:6", None, None), Ok((5, 6, vec![])));
        assert_eq!(
            resolve_user("app:extra", Some(passwd), Some(group)),
            Ok((1000, 2000, vec![]))
        );
        assert!(resolve_user("nobody", Some(passwd), None)
            .unwrap_err()
            .contains("unable to find user nobody"));
    }
}

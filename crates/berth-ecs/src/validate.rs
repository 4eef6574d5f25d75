//! Task definition validation: a pure function over the parsed RegisterTaskDefinition
//! input. It checks what a runtime needs to run the task (names, images, memory,
//! ports, dependencies, health checks, Fargate sizes) and reports the first problem
//! with ECS's `ClientException` wording. Fields it does not look at pass through
//! untouched: the operation stores the definition as given.
//!
//! Fargate sizes: "Troubleshoot Amazon ECS task definition invalid CPU or memory
//! errors" in the ECS developer guide (the table of CPU/memory combinations).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

/// At most this many containers in one task definition (ECS's quota).
pub const MAX_CONTAINERS: usize = 10;
/// Smallest memory limit a container may have, MiB (ECS refuses less than 6 MiB).
pub const MIN_CONTAINER_MEMORY_MIB: i64 = 6;
/// Task-level CPU units ECS accepts for EC2 (0.125 vCPU to 192 vCPU).
pub const TASK_CPU_RANGE: (u32, u32) = (128, 196_608);

/// The part of RegisterTaskDefinition's input that validation reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefInput {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub container_definitions: Vec<ContainerDef>,
    pub network_mode: Option<String>,
    #[serde(default)]
    pub requires_compatibilities: Vec<String>,
    /// Task CPU units, as an integer string or in vCPU ("1 vCPU").
    pub cpu: Option<String>,
    /// Task memory, MiB as an integer string or in GB ("2 GB").
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDef {
    pub name: Option<String>,
    pub image: Option<String>,
    /// CPU units (1024 per vCPU).
    pub cpu: Option<i64>,
    /// Hard memory limit, MiB.
    pub memory: Option<i64>,
    /// Soft memory limit, MiB.
    pub memory_reservation: Option<i64>,
    pub essential: Option<bool>,
    #[serde(default)]
    pub port_mappings: Vec<PortMappingInput>,
    #[serde(default)]
    pub depends_on: Vec<DependencyInput>,
    pub health_check: Option<HealthCheckInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingInput {
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub protocol: Option<String>,
    pub container_port_range: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyInput {
    pub container_name: Option<String>,
    pub condition: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckInput {
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds between checks (ECS: 5-300, default 30).
    pub interval: Option<i64>,
    /// Seconds a check may take (ECS: 2-60, default 5).
    pub timeout: Option<i64>,
    /// Failures before UNHEALTHY (ECS: 1-10, default 3).
    pub retries: Option<i64>,
    /// Grace period in seconds (ECS: 0-300, default 0).
    pub start_period: Option<i64>,
}

/// What validation learned: the normalised task size and where the definition can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// Task CPU units.
    pub cpu: Option<u32>,
    /// Task memory, MiB.
    pub memory: Option<u32>,
    /// The network mode in effect (`bridge` when none was given).
    pub network_mode: String,
    /// Launch types the definition is compatible with (ECS's `compatibilities`).
    pub compatibilities: Vec<String>,
}

/// Why a task definition is refused. The message is ECS's `ClientException` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("Invalid family name '{0}': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.")]
    FamilyName(String),
    #[error("Container list cannot be empty.")]
    NoContainers,
    #[error("Too many containers: a task definition can have at most {MAX_CONTAINERS} containers, got {0}.")]
    TooManyContainers(usize),
    #[error("Container.name should not be null or empty.")]
    ContainerNameMissing,
    #[error("Invalid container name '{0}': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.")]
    ContainerName(String),
    #[error(
        "Duplicate container name '{0}': container names must be unique within a task definition."
    )]
    DuplicateContainerName(String),
    #[error("Container.image should not be null or empty (container '{0}').")]
    ImageRequired(String),
    #[error("Invalid setting for container '{0}'. At least one of 'memory' or 'memoryReservation' must be specified.")]
    MemoryRequired(String),
    #[error("Invalid 'memory' setting for container '{container}': {memory} MiB is less than the minimum of {MIN_CONTAINER_MEMORY_MIB} MiB.")]
    ContainerMemoryTooSmall { container: String, memory: i64 },
    #[error("Invalid 'cpu' setting for container '{container}': {cpu} must not be negative.")]
    ContainerCpuNegative { container: String, cpu: i64 },
    #[error("Invalid setting for container '{container}'. 'memoryReservation' ({reservation} MiB) must be less than or equal to 'memory' ({memory} MiB).")]
    MemoryReservationAboveMemory {
        container: String,
        reservation: i64,
        memory: i64,
    },
    #[error("The 'cpu' setting for container '{0}' is greater than for the task.")]
    ContainerCpuAboveTask(String),
    #[error("The 'memory' setting for container '{0}' is greater than for the task.")]
    ContainerMemoryAboveTask(String),
    #[error("Invalid networkMode '{0}': must be one of bridge, host, awsvpc, none.")]
    NetworkMode(String),
    #[error("Invalid compatibility '{0}' in requiresCompatibilities: must be EC2 or FARGATE.")]
    Compatibility(String),
    #[error("Invalid 'cpu' setting for task.")]
    TaskCpu,
    #[error("Invalid 'memory' setting for task.")]
    TaskMemory,
    #[error("Fargate only supports network mode 'awsvpc'.")]
    FargateNetworkMode,
    #[error("Fargate requires that 'cpu' be defined at the task level.")]
    FargateCpuRequired,
    #[error("Fargate requires that 'memory' be defined at the task level.")]
    FargateMemoryRequired,
    #[error("No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values.")]
    FargateSize { cpu: u32, memory: u32 },
    #[error("Invalid 'containerPort' setting for container '{container}': {port} is not between 1 and 65535.")]
    ContainerPort { container: String, port: i64 },
    #[error("Invalid 'hostPort' setting for container '{container}': {port} is not between 0 and 65535.")]
    HostPort { container: String, port: i64 },
    #[error("Invalid port mapping for container '{0}': 'containerPort' or 'containerPortRange' is required.")]
    ContainerPortMissing(String),
    #[error(
        "Invalid 'protocol' setting for container '{container}': '{protocol}' must be tcp or udp."
    )]
    Protocol { container: String, protocol: String },
    #[error(
        "When networkMode={mode}, the host ports and container ports in port mappings must match."
    )]
    HostPortMismatch { mode: String },
    #[error("Host port {port}/{protocol} is mapped more than once in the task.")]
    DuplicateHostPort { port: i64, protocol: String },
    #[error("Container '{container}' depends on container '{target}', which is not in the task definition.")]
    DependsOnUnknown { container: String, target: String },
    #[error("Invalid dependency condition '{condition}' for container '{container}': must be one of START, COMPLETE, SUCCESS, HEALTHY.")]
    DependsOnCondition {
        container: String,
        condition: String,
    },
    #[error("Container '{container}' depends on container '{target}' being HEALTHY, but '{target}' has no healthCheck.")]
    HealthyWithoutHealthCheck { container: String, target: String },
    #[error("The container dependencies form a cycle through container '{0}'.")]
    DependencyCycle(String),
    #[error("A task definition must have at least one essential container.")]
    NoEssentialContainer,
    #[error("Invalid 'healthCheck' setting for container '{container}': '{field}' must be between {min} and {max}, got {value}.")]
    HealthCheckRange {
        container: String,
        field: &'static str,
        min: i64,
        max: i64,
        value: i64,
    },
    #[error("Invalid 'healthCheck' setting for container '{0}': 'command' must be [\"CMD\", ...] or [\"CMD-SHELL\", \"<command>\"].")]
    HealthCheckCommand(String),
}

/// Letters, digits, `_` and `-`, 1-255 long: the grammar of families, container and
/// cluster names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Task CPU: integer units ("1024") or vCPU ("1 vCPU", "0.25 vcpu").
pub fn parse_task_cpu(s: &str) -> Result<u32, ValidationError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let units = if let Some(v) = lower.strip_suffix("vcpu") {
        let v: f64 = v.trim().parse().map_err(|_| ValidationError::TaskCpu)?;
        (v * 1024.0).round()
    } else {
        t.parse::<u32>().map_err(|_| ValidationError::TaskCpu)? as f64
    };
    if !(TASK_CPU_RANGE.0 as f64..=TASK_CPU_RANGE.1 as f64).contains(&units) {
        return Err(ValidationError::TaskCpu);
    }
    Ok(units as u32)
}

/// Task memory: integer MiB ("2048") or GB ("2 GB", "0.5GB").
pub fn parse_task_memory(s: &str) -> Result<u32, ValidationError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let mib = if let Some(v) = lower.strip_suffix("gb") {
        let v: f64 = v.trim().parse().map_err(|_| ValidationError::TaskMemory)?;
        (v * 1024.0).round()
    } else {
        t.parse::<u32>().map_err(|_| ValidationError::TaskMemory)? as f64
    };
    if !(1.0..=u32::MAX as f64).contains(&mib) {
        return Err(ValidationError::TaskMemory);
    }
    Ok(mib as u32)
}

/// Whether Fargate offers `cpu` units with `memory` MiB.
pub fn fargate_size_ok(cpu: u32, memory: u32) -> bool {
    let range =
        |lo: u32, hi: u32, step: u32| memory >= lo && memory <= hi && memory.is_multiple_of(step);
    match cpu {
        256 => matches!(memory, 512 | 1024 | 2048),
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => false,
    }
}

const CONDITIONS: [&str; 4] = ["START", "COMPLETE", "SUCCESS", "HEALTHY"];

/// Validates a task definition; returns its normalised size and compatibilities.
pub fn validate(td: &TaskDefInput) -> Result<Validated, ValidationError> {
    use ValidationError as E;
    if !valid_name(&td.family) {
        return Err(E::FamilyName(td.family.clone()));
    }
    let network_mode = td.network_mode.clone().unwrap_or_else(|| "bridge".into());
    if !matches!(network_mode.as_str(), "bridge" | "host" | "awsvpc" | "none") {
        return Err(E::NetworkMode(network_mode));
    }
    for c in &td.requires_compatibilities {
        if c != "EC2" && c != "FARGATE" {
            return Err(E::Compatibility(c.clone()));
        }
    }
    let cpu = td.cpu.as_deref().map(parse_task_cpu).transpose()?;
    let memory = td.memory.as_deref().map(parse_task_memory).transpose()?;

    let requires_fargate = td.requires_compatibilities.iter().any(|c| c == "FARGATE");
    if requires_fargate {
        if network_mode != "awsvpc" {
            return Err(E::FargateNetworkMode);
        }
        let cpu = cpu.ok_or(E::FargateCpuRequired)?;
        let memory = memory.ok_or(E::FargateMemoryRequired)?;
        if !fargate_size_ok(cpu, memory) {
            return Err(E::FargateSize { cpu, memory });
        }
    }

    if td.container_definitions.is_empty() {
        return Err(E::NoContainers);
    }
    if td.container_definitions.len() > MAX_CONTAINERS {
        return Err(E::TooManyContainers(td.container_definitions.len()));
    }

    let mut names: Vec<&str> = Vec::new();
    for c in &td.container_definitions {
        let name = c.name.as_deref().ok_or(E::ContainerNameMissing)?;
        if name.is_empty() {
            return Err(E::ContainerNameMissing);
        }
        if !valid_name(name) {
            return Err(E::ContainerName(name.into()));
        }
        if names.contains(&name) {
            return Err(E::DuplicateContainerName(name.into()));
        }
        names.push(name);
    }

    let mut host_ports: HashSet<(i64, String)> = HashSet::new();
    let fixed_ports = network_mode == "awsvpc" || network_mode == "host";
    for (c, name) in td.container_definitions.iter().zip(&names) {
        let name = name.to_string();
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(E::ImageRequired(name));
        }
        if let Some(v) = c.cpu {
            if v < 0 {
                return Err(E::ContainerCpuNegative {
                    container: name,
                    cpu: v,
                });
            }
        }
        for m in [c.memory, c.memory_reservation].into_iter().flatten() {
            if m < MIN_CONTAINER_MEMORY_MIB {
                return Err(E::ContainerMemoryTooSmall {
                    container: name,
                    memory: m,
                });
            }
        }
        if c.memory.is_none() && c.memory_reservation.is_none() && memory.is_none() {
            return Err(E::MemoryRequired(name));
        }
        if let (Some(r), Some(m)) = (c.memory_reservation, c.memory) {
            if r > m {
                return Err(E::MemoryReservationAboveMemory {
                    container: name,
                    reservation: r,
                    memory: m,
                });
            }
        }
        if let (Some(tc), Some(cc)) = (cpu, c.cpu) {
            if cc > tc as i64 {
                return Err(E::ContainerCpuAboveTask(name));
            }
        }
        if let Some(tm) = memory {
            if c.memory
                .or(c.memory_reservation)
                .is_some_and(|m| m > tm as i64)
            {
                return Err(E::ContainerMemoryAboveTask(name));
            }
        }
        for pm in &c.port_mappings {
            let protocol = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
            if protocol != "tcp" && protocol != "udp" {
                return Err(E::Protocol {
                    container: name,
                    protocol,
                });
            }
            let Some(cp) = pm.container_port else {
                if pm.container_port_range.is_some() {
                    continue;
                }
                return Err(E::ContainerPortMissing(name));
            };
            if !(1..=65535).contains(&cp) {
                return Err(E::ContainerPort {
                    container: name,
                    port: cp,
                });
            }
            if let Some(hp) = pm.host_port {
                if !(0..=65535).contains(&hp) {
                    return Err(E::HostPort {
                        container: name,
                        port: hp,
                    });
                }
            }
            let host = if fixed_ports {
                match pm.host_port {
                    Some(hp) if hp != cp => {
                        return Err(E::HostPortMismatch {
                            mode: network_mode.clone(),
                        })
                    }
                    _ => cp,
                }
            } else {
                // bridge: 0 or absent is a dynamic port, never a clash.
                pm.host_port.unwrap_or(0)
            };
            if host != 0 && !host_ports.insert((host, protocol.clone())) {
                return Err(E::DuplicateHostPort {
                    port: host,
                    protocol,
                });
            }
        }
        if let Some(hc) = &c.health_check {
            check_health(&name, hc)?;
        }
    }

    // dependsOn: targets exist, conditions known, HEALTHY needs a health check.
    let by_name: HashMap<&str, &ContainerDef> = names
        .iter()
        .copied()
        .zip(td.container_definitions.iter())
        .collect();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, name) in td.container_definitions.iter().zip(&names) {
        for d in &c.depends_on {
            let target = d.container_name.as_deref().unwrap_or("");
            let Some(t) = by_name.get(target) else {
                return Err(E::DependsOnUnknown {
                    container: name.to_string(),
                    target: target.into(),
                });
            };
            let condition = d.condition.as_deref().unwrap_or("");
            if !CONDITIONS.contains(&condition) {
                return Err(E::DependsOnCondition {
                    container: name.to_string(),
                    condition: condition.into(),
                });
            }
            if condition == "HEALTHY" && t.health_check.is_none() {
                return Err(E::HealthyWithoutHealthCheck {
                    container: name.to_string(),
                    target: target.into(),
                });
            }
            graph.entry(name).or_default().push(target);
        }
    }
    if let Some(c) = find_cycle(&names, &graph) {
        return Err(E::DependencyCycle(c.into()));
    }

    if !td
        .container_definitions
        .iter()
        .any(|c| c.essential.unwrap_or(true))
    {
        return Err(E::NoEssentialContainer);
    }

    let mut compatibilities = vec!["EC2".to_string()];
    if network_mode == "awsvpc" {
        if let (Some(c), Some(m)) = (cpu, memory) {
            if fargate_size_ok(c, m) {
                compatibilities.push("FARGATE".into());
            }
        }
    }
    Ok(Validated {
        cpu,
        memory,
        network_mode,
        compatibilities,
    })
}

fn check_health(container: &str, hc: &HealthCheckInput) -> Result<(), ValidationError> {
    let cmd_ok = match hc.command.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") => hc.command.len() >= 2,
        _ => false,
    };
    if !cmd_ok {
        return Err(ValidationError::HealthCheckCommand(container.into()));
    }
    for (field, value, min, max) in [
        ("interval", hc.interval, 5, 300),
        ("timeout", hc.timeout, 2, 60),
        ("retries", hc.retries, 1, 10),
        ("startPeriod", hc.start_period, 0, 300),
    ] {
        if let Some(v) = value {
            if !(min..=max).contains(&v) {
                return Err(ValidationError::HealthCheckRange {
                    container: container.into(),
                    field,
                    min,
                    max,
                    value: v,
                });
            }
        }
    }
    Ok(())
}

/// A container on a dependency cycle, if there is one (depth-first, colours).
fn find_cycle<'a>(names: &[&'a str], graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<&'a str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut HashMap<&'a str, Colour>,
    ) -> Option<&'a str> {
        colour.insert(n, Colour::Grey);
        for &m in graph.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match colour.get(m).copied().unwrap_or(Colour::White) {
                Colour::Grey => return Some(m),
                Colour::White => {
                    if let Some(c) = visit(m, graph, colour) {
                        return Some(c);
                    }
                }
                Colour::Black => {}
            }
        }
        colour.insert(n, Colour::Black);
        None
    }
    let mut colour: HashMap<&str, Colour> = HashMap::new();
    for &n in names {
        if colour.get(n).copied().unwrap_or(Colour::White) == Colour::White {
            if let Some(c) = visit(n, graph, &mut colour) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;

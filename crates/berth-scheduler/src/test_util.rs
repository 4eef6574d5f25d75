//! A small cluster builder for tests: `Cluster::new().instances(4).zones(["a", "b"])`.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    ClusterState, Instance, InstanceId, InstanceStatus, Resources, ATTR_AVAILABILITY_ZONE,
    ATTR_INSTANCE_TYPE, ATTR_OS_TYPE,
};

/// A change to one instance before the state is built.
pub type Edit = fn(&mut Instance);

/// Builds a [`ClusterState`] of identical instances `i-0`, `i-1`, … spread round-robin
/// over the zones, each then adjustable with [`Cluster::with`].
#[derive(Debug, Clone)]
pub struct Cluster {
    count: usize,
    zones: Vec<String>,
    cpu: u32,
    memory: u32,
    ports: BTreeSet<u16>,
    edits: Vec<(usize, Edit)>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// One instance in zone `a`, 2048 CPU units and 4096 MiB.
    pub fn new() -> Self {
        Cluster {
            count: 1,
            zones: vec!["a".into()],
            cpu: 2048,
            memory: 4096,
            ports: BTreeSet::new(),
            edits: Vec::new(),
        }
    }

    pub fn instances(mut self, n: usize) -> Self {
        self.count = n;
        self
    }

    /// Zones assigned round-robin: instance i is in `zones[i % zones.len()]`.
    pub fn zones<const N: usize>(mut self, zones: [&str; N]) -> Self {
        self.zones = zones.iter().map(|z| (*z).to_owned()).collect();
        self
    }

    /// Registered CPU units and MiB of every instance.
    pub fn size(mut self, cpu: u32, memory: u32) -> Self {
        self.cpu = cpu;
        self.memory = memory;
        self
    }

    /// Ports reserved on every instance at registration.
    pub fn reserved_ports<const N: usize>(mut self, ports: [u16; N]) -> Self {
        self.ports = ports.into_iter().collect();
        self
    }

    /// Changes instance `i` before the state is built.
    pub fn with(mut self, i: usize, edit: Edit) -> Self {
        self.edits.push((i, edit));
        self
    }

    /// The instances, before they become a state.
    pub fn build_instances(&self) -> Vec<Instance> {
        let mut out: Vec<Instance> = (0..self.count)
            .map(|i| {
                let zone = self.zones[i % self.zones.len().max(1)].clone();
                let attributes = BTreeMap::from([
                    (ATTR_AVAILABILITY_ZONE.to_owned(), Some(zone)),
                    (ATTR_INSTANCE_TYPE.to_owned(), Some("m5.large".to_owned())),
                    (ATTR_OS_TYPE.to_owned(), Some("linux".to_owned())),
                ]);
                Instance {
                    id: InstanceId(format!("i-{i}")),
                    arn: format!(
                        "arn:aws:ecs:us-east-1:000000000000:container-instance/test/i-{i}"
                    ),
                    attributes,
                    registered: Resources {
                        cpu_units: self.cpu,
                        memory_mib: self.memory,
                        ports: self.ports.clone(),
                    },
                    status: InstanceStatus::Active,
                    connected: true,
                    registered_at: 1_600_000_000 + i as i64 * 3600,
                    running: Vec::new(),
                }
            })
            .collect();
        for (i, edit) in &self.edits {
            if let Some(inst) = out.get_mut(*i) {
                edit(inst);
            }
        }
        out
    }

    pub fn build(&self) -> ClusterState {
        ClusterState::new(self.build_instances()).expect("test cluster ids are unique")
    }
}

//! Placement throughput on a simulated cluster: 10,000 instances in 3 zones, 100,000
//! task placements with spread(attribute:ecs.availability-zone) + binpack(memory) and a
//! memberOf constraint, then checks nothing is over-committed.
//!
//! `cargo run --release -p berth-scheduler --example simulate [-- --instances N
//! --tasks N --per-call N]`. Prints placements/second per scenario; the target is
//! ≥ 10,000/s (Nomad's published record is ~3,750/s).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use berth_scheduler::{
    place, BinpackField, ClusterState, Instance, InstanceId, InstanceStatus, PlacementConstraint,
    PlacementStrategy, Resources, Rng, TaskRequest, ATTR_AVAILABILITY_ZONE, ATTR_INSTANCE_TYPE,
    ATTR_OS_TYPE,
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
/// (instance type, CPU units, MiB)
const TYPES: [(&str, u32, u32); 4] = [
    ("m5.large", 2048, 7680),
    ("m5.xlarge", 4096, 15_616),
    ("c5.xlarge", 4096, 7424),
    ("r5.large", 2048, 15_872),
];
const MEMBER_OF: &str =
    "attribute:ecs.instance-type =~ m5.* or attribute:ecs.instance-type == r5.large";

struct Args {
    instances: usize,
    tasks: u32,
    per_call: u32,
}

fn args() -> Args {
    let mut a = Args {
        instances: 10_000,
        tasks: 100_000,
        per_call: 100,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        match (pair[0].as_str(), value) {
            ("--instances", Some(v)) => a.instances = v as usize,
            ("--tasks", Some(v)) => a.tasks = v as u32,
            ("--per-call", Some(v)) => a.per_call = (v as u32).max(1),
            _ => {
                eprintln!("usage: simulate [--instances N] [--tasks N] [--per-call N]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn cluster(n: usize) -> ClusterState {
    let mut rng = Rng::new(2026);
    let instances = (0..n)
        .map(|i| {
            let (kind, cpu, mem) = TYPES[rng.below(TYPES.len())];
            Instance {
                id: InstanceId(format!("i-{i:017x}")),
                arn: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/sim/{i}"),
                attributes: BTreeMap::from([
                    (
                        ATTR_AVAILABILITY_ZONE.to_owned(),
                        Some(ZONES[i % 3].to_owned()),
                    ),
                    (ATTR_INSTANCE_TYPE.to_owned(), Some(kind.to_owned())),
                    (ATTR_OS_TYPE.to_owned(), Some("linux".to_owned())),
                ]),
                registered: Resources {
                    cpu_units: cpu,
                    memory_mib: mem,
                    ports: BTreeSet::from([22, 2375, 2376, 51678, 51679]),
                },
                status: if i % 97 == 0 {
                    InstanceStatus::Draining
                } else {
                    InstanceStatus::Active
                },
                connected: i % 101 != 0,
                registered_at: 1_700_000_000 + i as i64,
                running: Vec::new(),
            }
        })
        .collect();
    ClusterState::new(instances).expect("unique ids")
}

/// Services of mixed sizes, cycled through until `tasks` are placed `per_call` at a time.
fn requests() -> Vec<TaskRequest> {
    let sizes = [(64, 256), (128, 512), (32, 128), (256, 1024), (64, 192)];
    (0..50)
        .map(|s| {
            let (cpu, mem) = sizes[s % sizes.len()];
            TaskRequest::new(&format!("svc{s}"), cpu, mem).for_service(&format!("svc{s}"))
        })
        .collect()
}

fn run(name: &str, a: &Args, strategies: &[PlacementStrategy]) -> f64 {
    let mut state = cluster(a.instances);
    let constraints = [PlacementConstraint::from_api("memberOf", Some(MEMBER_OF)).expect("valid")];
    let reqs = requests();
    let mut placed = 0u64;
    let mut failed_calls = 0u64;
    let mut per_zone: BTreeMap<String, u64> = BTreeMap::new();
    let mut call = 0u64;
    let start = Instant::now();
    let mut left = a.tasks;
    while left > 0 {
        let n = left.min(a.per_call);
        let req = &reqs[call as usize % reqs.len()];
        let p = place(&mut state, req, n, strategies, &constraints, call);
        placed += p.placed.len() as u64;
        if !p.failures.is_empty() {
            failed_calls += 1;
        }
        for id in &p.placed {
            let zone = state
                .instance(id)
                .and_then(|i| i.attributes[ATTR_AVAILABILITY_ZONE].clone());
            *per_zone.entry(zone.unwrap_or_default()).or_default() += 1;
        }
        left -= n;
        call += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    // Sanity: nothing over-committed, nothing on excluded instances.
    let constraint = berth_scheduler::parse(MEMBER_OF).expect("valid");
    for inst in state.instances() {
        let r = state.remaining(&inst.id).expect("listed");
        assert!(
            r.cpu_units >= 0 && r.memory_mib >= 0,
            "{} over-committed",
            inst.id
        );
        if !inst.running.is_empty() {
            assert!(inst.connected && inst.status == InstanceStatus::Active);
            assert_eq!(state.matches(&inst.id, &constraint), Some(true));
        }
    }
    let rate = placed as f64 / secs;
    println!(
        "{name}: {placed} placed in {call} calls of ≤{} ({failed_calls} calls with failures) in {:.3} s = {:.0} placements/s; per zone {:?}",
        a.per_call, secs, rate, per_zone
    );
    rate
}

fn main() {
    let a = args();
    println!(
        "cluster: {} instances (1 in 97 DRAINING, 1 in 101 disconnected), 3 zones, memberOf({MEMBER_OF})",
        a.instances
    );
    let spread_then_pack = [
        PlacementStrategy::spread_zones(),
        PlacementStrategy::Binpack(BinpackField::Memory),
    ];
    let pack_then_spread = [
        PlacementStrategy::Binpack(BinpackField::Memory),
        PlacementStrategy::spread_zones(),
    ];
    let main_rate = run("spread(zone)+binpack(memory)", &a, &spread_then_pack);
    run("binpack(memory)+spread(zone)", &a, &pack_then_spread);
    for per_call in [10, 1] {
        let small = Args {
            instances: a.instances,
            tasks: 5_000,
            per_call,
        };
        run(
            &format!("spread(zone)+binpack(memory), {per_call} per call"),
            &small,
            &spread_then_pack,
        );
    }
    let target = 10_000.0;
    println!(
        "target ≥ {target:.0} placements/s: {}",
        if main_rate >= target {
            "met"
        } else {
            "NOT met"
        }
    );
}

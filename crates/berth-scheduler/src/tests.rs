//! Placement on small clusters: each strategy, constraint and failure reason.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::test_util::Cluster;
use crate::*;

fn ids(p: &Placement) -> Vec<&str> {
    p.placed.iter().map(|i| i.0.as_str()).collect()
}

fn member(expr: &str) -> PlacementConstraint {
    PlacementConstraint::from_api("memberOf", Some(expr)).unwrap()
}

fn zone_of(state: &ClusterState, id: &InstanceId) -> String {
    state.instance(id).unwrap().attributes[ATTR_AVAILABILITY_ZONE]
        .clone()
        .unwrap()
}

fn per_instance(p: &Placement) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for id in &p.placed {
        *m.entry(id.0.as_str()).or_insert(0) += 1;
    }
    m
}

const SEED: u64 = 42;

/// spread over 2 zones puts 4 tasks 2 + 2, and on 4 different instances.
#[test]
fn spread_two_zones_places_two_and_two() {
    let mut state = Cluster::new().instances(4).zones(["a", "b"]).build();
    let req = TaskRequest::new("web", 256, 512);
    let p = place(
        &mut state,
        &req,
        4,
        &[PlacementStrategy::spread_zones()],
        &[],
        SEED,
    );
    assert!(p.failures.is_empty());
    let zones: Vec<String> = p.placed.iter().map(|i| zone_of(&state, i)).collect();
    assert_eq!(zones.iter().filter(|z| *z == "a").count(), 2);
    assert_eq!(zones.iter().filter(|z| *z == "b").count(), 2);
    assert_eq!(
        per_instance(&p).len(),
        4,
        "ties inside a zone go to the emptier instance"
    );
}

/// spread counts only tasks of the same group: another service's tasks do not push
/// ours away, but our own earlier tasks do.
#[test]
fn spread_counts_only_the_same_group() {
    let mut state = Cluster::new().instances(2).zones(["a", "b"]).build();
    let other = TaskRequest::new("db", 128, 128);
    place(
        &mut state,
        &other,
        3,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        SEED,
    );
    let web = TaskRequest::new("web", 128, 128);
    let first = place(
        &mut state,
        &web,
        1,
        &[PlacementStrategy::spread_zones()],
        &[],
        1,
    );
    let second = place(
        &mut state,
        &web,
        1,
        &[PlacementStrategy::spread_zones()],
        &[],
        1,
    );
    assert_ne!(
        zone_of(&state, &first.placed[0]),
        zone_of(&state, &second.placed[0])
    );
}

/// spread on an existing imbalance fills the zone with fewer of the group's tasks first.
#[test]
fn spread_evens_out_an_existing_imbalance() {
    let mut state = Cluster::new().instances(3).zones(["a", "b", "c"]).build();
    let req = TaskRequest::new("web", 64, 64).for_service("web");
    for (i, n) in [(0usize, 3u32), (1, 1)] {
        let id = InstanceId(format!("i-{i}"));
        let only = member(&format!("ec2InstanceId == {id}"));
        place(&mut state, &req, n, &[], &[only], SEED);
    }
    // a: 3, b: 1, c: 0 → five more end at a: 3, b: 3, c: 3.
    let p = place(
        &mut state,
        &req,
        5,
        &[PlacementStrategy::spread_zones()],
        &[],
        SEED,
    );
    let mut per_zone = BTreeMap::new();
    for id in &p.placed {
        *per_zone.entry(zone_of(&state, id)).or_insert(0) += 1;
    }
    assert_eq!(per_zone.get("a"), None, "a already had the most");
    assert_eq!(per_zone["b"], 2);
    assert_eq!(per_zone["c"], 3);
}

/// spread(instanceId) puts one task per instance before doubling up.
#[test]
fn spread_instance_id_round_robins() {
    let mut state = Cluster::new().instances(3).build();
    let req = TaskRequest::new("web", 64, 64);
    let strategy = PlacementStrategy::from_api("spread", Some("host")).unwrap();
    let p = place(&mut state, &req, 6, &[strategy], &[], SEED);
    assert!(
        per_instance(&p).values().all(|&n| n == 2),
        "{:?}",
        per_instance(&p)
    );
    let first_three: std::collections::BTreeSet<_> = p.placed[..3].iter().collect();
    assert_eq!(first_three.len(), 3);
}

/// binpack(memory) fills the fullest instance that still fits first.
#[test]
fn binpack_fills_the_fullest_instance_first() {
    let mut state = Cluster::new()
        .instances(3)
        .size(4096, 4096)
        .with(1, |i| i.registered.memory_mib = 1024)
        .with(2, |i| i.registered.memory_mib = 2048)
        .build();
    let req = TaskRequest::new("web", 64, 512);
    let p = place(
        &mut state,
        &req,
        5,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        SEED,
    );
    // i-1 (1024) takes two, then i-2 (2048) takes four… we asked five: 2 + 3.
    assert_eq!(ids(&p), ["i-1", "i-1", "i-2", "i-2", "i-2"]);
}

/// binpack skips an instance too small for the task even though it is the fullest.
#[test]
fn binpack_skips_instances_that_do_not_fit() {
    let mut state = Cluster::new()
        .instances(2)
        .with(0, |i| i.registered.memory_mib = 300)
        .build();
    let req = TaskRequest::new("web", 64, 512);
    let p = place(
        &mut state,
        &req,
        1,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        SEED,
    );
    assert_eq!(ids(&p), ["i-1"]);
}

/// binpack(cpu) orders by remaining CPU, not memory.
#[test]
fn binpack_cpu_uses_cpu() {
    let mut state = Cluster::new()
        .instances(2)
        .with(0, |i| i.registered.memory_mib = 1024)
        .with(1, |i| i.registered.cpu_units = 512)
        .build();
    let req = TaskRequest::new("web", 256, 256);
    let cpu = PlacementStrategy::from_api("binpack", Some("cpu")).unwrap();
    assert_eq!(ids(&place(&mut state, &req, 1, &[cpu], &[], SEED)), ["i-1"]);
    let mem = PlacementStrategy::from_api("binpack", Some("memory")).unwrap();
    assert_eq!(ids(&place(&mut state, &req, 1, &[mem], &[], SEED)), ["i-0"]);
}

/// A later strategy only breaks the earlier one's ties: spread(zone) then binpack(memory)
/// picks the zone first, then the fullest instance inside it.
#[test]
fn later_strategies_break_ties() {
    let mut state = Cluster::new()
        .instances(4)
        .zones(["a", "b"])
        .with(2, |i| i.registered.memory_mib = 1024) // zone a, fuller
        .with(1, |i| i.registered.memory_mib = 512) // zone b, fullest overall
        .build();
    let req = TaskRequest::new("web", 64, 256);
    let chain = [
        PlacementStrategy::spread_zones(),
        PlacementStrategy::Binpack(BinpackField::Memory),
    ];
    let p = place(&mut state, &req, 2, &chain, &[], SEED);
    let mut got = ids(&p);
    got.sort();
    assert_eq!(got, ["i-1", "i-2"]);
    // The reverse order packs first: both go to the fullest instance, zones be damned.
    let mut state = Cluster::new()
        .instances(4)
        .zones(["a", "b"])
        .with(1, |i| i.registered.memory_mib = 512)
        .build();
    let chain = [
        PlacementStrategy::Binpack(BinpackField::Memory),
        PlacementStrategy::spread_zones(),
    ];
    assert_eq!(
        ids(&place(&mut state, &req, 2, &chain, &[], SEED)),
        ["i-1", "i-1"]
    );
}

/// spread over an attribute some instances lack treats "no value" as one more value.
#[test]
fn spread_over_a_missing_attribute() {
    let mut state = Cluster::new()
        .instances(3)
        .with(0, |i| {
            i.attributes.insert("rack".into(), Some("r1".into()));
        })
        .with(1, |i| {
            i.attributes.insert("rack".into(), Some("r2".into()));
        })
        .build();
    let req = TaskRequest::new("web", 64, 64);
    let rack = PlacementStrategy::from_api("spread", Some("attribute:rack")).unwrap();
    let p = place(&mut state, &req, 3, &[rack], &[], SEED);
    assert_eq!(
        per_instance(&p).len(),
        3,
        "r1, r2 and the rack-less i-2 each get one"
    );
}

/// random after binpack only draws among the fullest instances.
#[test]
fn random_breaks_only_the_remaining_ties() {
    let chain = [
        PlacementStrategy::Binpack(BinpackField::Memory),
        PlacementStrategy::Random,
    ];
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let mut state = Cluster::new()
            .instances(6)
            .with(4, |i| i.registered.memory_mib = 1024)
            .with(5, |i| i.registered.memory_mib = 1024)
            .build();
        let p = place(
            &mut state,
            &TaskRequest::new("web", 64, 64),
            1,
            &chain,
            &[],
            seed,
        );
        seen.insert(p.placed[0].0.clone());
    }
    assert_eq!(seen, ["i-4", "i-5"].map(String::from).into_iter().collect());
}

/// Small calls (one pass per task) choose exactly what large calls (heaps) choose.
#[test]
fn direct_and_heap_paths_agree() {
    let chains: [&[PlacementStrategy]; 4] = [
        &[
            PlacementStrategy::spread_zones(),
            PlacementStrategy::Binpack(BinpackField::Memory),
        ],
        &[PlacementStrategy::Binpack(BinpackField::Cpu)],
        &[PlacementStrategy::Spread(SpreadField::InstanceId)],
        &[],
    ];
    // The direct path tests memberOf masks and resources before the full check.
    let member_of = [member("ec2InstanceId != i-1")];
    let constraint_sets: [&[PlacementConstraint]; 2] = [&[], &member_of];
    for (n, chain) in chains.iter().enumerate() {
        for constraints in constraint_sets {
            for seed in 0..10 {
                let cluster = Cluster::new()
                    .instances(7)
                    .zones(["a", "b", "c"])
                    .with(2, |i| i.registered.memory_mib = 700)
                    .with(5, |i| i.registered.cpu_units = 300)
                    .with(6, |i| i.connected = false);
                let req = TaskRequest::new("web", 100, 300).for_service("web");
                let mut small = cluster.build();
                let mut one_by_one = Vec::new();
                for _ in 0..6 {
                    one_by_one.extend(place(&mut small, &req, 1, chain, constraints, seed).placed);
                }
                let mut large = cluster.build();
                let mut batched = place(&mut large, &req, 5, chain, constraints, seed).placed;
                batched.extend(place(&mut large, &req, 1, chain, constraints, seed).placed);
                assert_eq!(
                    one_by_one, batched,
                    "chain {n}, {constraints:?}, seed {seed}"
                );
            }
        }
    }
}

/// random: the same seed gives the same placement; the choice varies with the seed
/// and stays within the eligible instances.
#[test]
fn random_is_seeded() {
    let run = |seed| {
        let mut state = Cluster::new().instances(8).build();
        let req = TaskRequest::new("web", 64, 64);
        place(
            &mut state,
            &req,
            5,
            &[PlacementStrategy::Random],
            &[member("ec2InstanceId != i-3")],
            seed,
        )
    };
    assert_eq!(run(7), run(7));
    let distinct: std::collections::BTreeSet<Vec<InstanceId>> =
        (0..20).map(|s| run(s).placed).collect();
    assert!(distinct.len() > 10);
    assert!((0..20).all(|s| !run(s).placed.contains(&InstanceId::from("i-3"))));
}

/// No strategy: a service's tasks spread over zones (ECS's documented service default);
/// a standalone task is placed at random.
#[test]
fn defaults() {
    assert_eq!(
        default_strategies(true),
        [PlacementStrategy::spread_zones()]
    );
    assert_eq!(default_strategies(false), [PlacementStrategy::Random]);
    let mut state = Cluster::new().instances(6).zones(["a", "b", "c"]).build();
    let req = TaskRequest::new("web", 64, 64).for_service("web");
    let p = place(&mut state, &req, 3, &[], &[], SEED);
    let zones: std::collections::BTreeSet<String> =
        p.placed.iter().map(|i| zone_of(&state, i)).collect();
    assert_eq!(zones.len(), 3);
}

/// memberOf excludes instances the expression does not match.
#[test]
fn member_of_excludes() {
    let mut state = Cluster::new()
        .instances(4)
        .zones(["a", "b"])
        .with(3, |i| {
            i.attributes
                .insert(ATTR_INSTANCE_TYPE.into(), Some("t2.micro".into()));
        })
        .build();
    let req = TaskRequest::new("web", 64, 64);
    let p = place(
        &mut state,
        &req,
        3,
        &[],
        &[member("attribute:ecs.instance-type =~ t2.*")],
        SEED,
    );
    assert_eq!(ids(&p), ["i-3", "i-3", "i-3"]);
    let p = place(
        &mut state,
        &req,
        4,
        &[],
        &[member(
            "attribute:ecs.availability-zone == a and not(ec2InstanceId == i-0)",
        )],
        SEED,
    );
    assert!(p.placed.iter().all(|i| i.0 == "i-2"));
}

/// memberOf on `task:group` follows tasks placed during the same call.
#[test]
fn member_of_task_group_sees_placements_as_they_happen() {
    let mut state = Cluster::new().instances(3).build();
    let db = TaskRequest::new("db", 64, 64);
    let one = member("ec2InstanceId == i-1");
    place(&mut state, &db, 1, &[], &[one], SEED);
    let web = TaskRequest::new("web", 64, 64);
    let p = place(
        &mut state,
        &web,
        2,
        &[],
        &[member("task:group == family:db")],
        SEED,
    );
    assert_eq!(ids(&p), ["i-1", "i-1"]);
    // Anti-affinity with itself: each placement removes its instance.
    let cache = TaskRequest::new("cache", 64, 64);
    let p = place(
        &mut state,
        &cache,
        4,
        &[],
        &[member("not(task:group == family:cache)")],
        SEED,
    );
    assert_eq!(p.placed.len(), 3);
    assert_eq!(p.failures[0].reason, FailureReason::MemberOf);
}

/// Cached memberOf results follow added instances and agent reconnections.
#[test]
fn member_of_cache_stays_current() {
    let mut state = Cluster::new().instances(2).build();
    let req = TaskRequest::new("web", 64, 64);
    let only_new = member("attribute:ecs.instance-type == c5.large");
    let p = place(
        &mut state,
        &req,
        1,
        &[],
        std::slice::from_ref(&only_new),
        SEED,
    );
    assert_eq!(p.failures[0].reason, FailureReason::MemberOf);
    let mut extra = Cluster::new().instances(3).build_instances().remove(2);
    extra
        .attributes
        .insert(ATTR_INSTANCE_TYPE.into(), Some("c5.large".into()));
    state.add_instance(extra).unwrap();
    assert_eq!(
        ids(&place(&mut state, &req, 1, &[], &[only_new], SEED)),
        ["i-2"]
    );
    let connected = member("agentConnected == true");
    state.set_connected(&"i-0".into(), false);
    state.set_connected(&"i-1".into(), false);
    let p = place(
        &mut state,
        &req,
        1,
        &[],
        std::slice::from_ref(&connected),
        SEED,
    );
    assert_eq!(ids(&p), ["i-2"]);
    state.set_connected(&"i-2".into(), false);
    state.set_connected(&"i-1".into(), true);
    assert_eq!(
        ids(&place(&mut state, &req, 1, &[], &[connected], SEED)),
        ["i-1"]
    );
}

/// registeredAt, runningTasksCount, agentConnected, exists and in work as subjects.
#[test]
fn query_subjects() {
    let state = Cluster::new()
        .instances(3)
        .with(2, |i| {
            i.attributes.insert("gpu".into(), None);
            i.running.push(PlacedTask {
                task_definition_family: "x".into(),
                group: "family:x".into(),
                service: None,
                cpu: 1,
                memory: 1,
                host_ports: vec![],
            });
        })
        .build();
    let hits = |q: &str| -> Vec<String> {
        let e = parse(q).unwrap();
        state
            .instances()
            .iter()
            .filter(|i| state.matches(&i.id, &e).unwrap())
            .map(|i| i.id.0.clone())
            .collect()
    };
    // i-0 registered at 2020-09-13T12:26:40Z, then one hour apart.
    assert_eq!(hits("registeredAt > 2020-09-13T12:30:00Z"), ["i-1", "i-2"]);
    assert_eq!(hits("registeredAt <= 2020-09-13T13:26:40+01:00"), ["i-0"]);
    assert_eq!(hits("runningTasksCount > 0"), ["i-2"]);
    assert_eq!(hits("attribute:gpu exists"), ["i-2"]);
    assert_eq!(hits("attribute:gpu not_exists"), ["i-0", "i-1"]);
    assert_eq!(hits("attribute:gpu == x"), Vec::<String>::new());
    assert_eq!(hits("attribute:gpu != x"), ["i-0", "i-1", "i-2"]);
    assert_eq!(hits("ec2InstanceId in [i-0, 'i-2']"), ["i-0", "i-2"]);
    assert_eq!(hits("ec2InstanceId !in [i-0, 'i-2']"), ["i-1"]);
    assert_eq!(
        hits("agentConnected == true || task:group =~ family:*"),
        ["i-0", "i-1", "i-2"]
    );
    assert_eq!(hits("task:group !~ family:*"), ["i-0", "i-1"]);
}

/// distinctInstance puts no two tasks of the group on one instance, counting tasks
/// already running, and says so when it runs out.
#[test]
fn distinct_instance() {
    let mut state = Cluster::new().instances(3).build();
    let req = TaskRequest::new("web", 64, 64);
    let distinct = PlacementConstraint::from_api("distinctInstance", None).unwrap();
    let p = place(
        &mut state,
        &req,
        2,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        std::slice::from_ref(&distinct),
        SEED,
    );
    assert_eq!(per_instance(&p).len(), 2);
    let p = place(&mut state, &req, 2, &[], &[distinct], SEED);
    assert_eq!(p.placed.len(), 1);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(
        p.failures[0].reason.as_str(),
        "DistinctInstance placement constraint unsatisfied."
    );
    assert!(p.failures[0]
        .detail
        .contains("already runs a task of group family:web (and 2 more)"));
}

/// A static host port taken on an instance (reserved or used) keeps the next task off it.
#[test]
fn port_conflicts() {
    let mut state = Cluster::new()
        .instances(2)
        .reserved_ports([22, 51678])
        .build();
    let mut req = TaskRequest::new("web", 64, 64);
    req.host_ports = vec![80];
    let p = place(
        &mut state,
        &req,
        3,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        SEED,
    );
    assert_eq!(p.placed.len(), 2);
    assert_ne!(p.placed[0], p.placed[1]);
    assert_eq!(p.failures[0].reason.as_str(), "RESOURCE:PORTS");
    assert!(
        p.failures[0].detail.contains("host port 80 in use"),
        "{}",
        p.failures[0].detail
    );
    req.host_ports = vec![22];
    let p = place(&mut state, &req, 1, &[], &[], SEED);
    assert_eq!(p.failures[0].reason, FailureReason::Ports);
    // Dynamic ports (none listed) never conflict.
    req.host_ports = vec![];
    assert_eq!(place(&mut state, &req, 2, &[], &[], SEED).placed.len(), 2);
}

/// Not enough memory: RESOURCE:MEMORY, naming the instance with the most free memory.
#[test]
fn memory_failure_names_the_closest_instance() {
    let mut state = Cluster::new()
        .instances(3)
        .size(1024, 128)
        .with(2, |i| i.registered.memory_mib = 256)
        .build();
    let req = TaskRequest::new("web", 64, 512);
    let p = place(&mut state, &req, 1, &[], &[], SEED);
    assert!(p.placed.is_empty());
    assert_eq!(
        p.failures,
        [Failure {
            arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/test/i-2".into(),
            reason: FailureReason::Memory,
            detail: "largest free memory: i-2 (256 MiB of the 512 MiB asked); 3 instance(s) short of memory".into(),
        }]
    );
    assert_eq!(p.failures[0].reason.as_str(), "RESOURCE:MEMORY");
}

/// Not enough CPU: RESOURCE:CPU, naming the instance with the most free CPU.
#[test]
fn cpu_failure() {
    let mut state = Cluster::new()
        .instances(2)
        .size(256, 4096)
        .with(1, |i| i.registered.cpu_units = 512)
        .build();
    let p = place(
        &mut state,
        &TaskRequest::new("web", 1024, 64),
        1,
        &[],
        &[],
        SEED,
    );
    assert_eq!(p.failures[0].reason.as_str(), "RESOURCE:CPU");
    assert!(p.failures[0]
        .detail
        .starts_with("largest free CPU: i-1 (512 of the 1024 CPU units asked)"));
}

/// Placement stops at the first task that fits nowhere and reports why, keeping the
/// ones placed before it.
#[test]
fn partial_placement_reports_the_rest() {
    let mut state = Cluster::new().instances(2).size(1024, 1024).build();
    let p = place(
        &mut state,
        &TaskRequest::new("web", 64, 512),
        5,
        &[],
        &[],
        SEED,
    );
    assert_eq!(p.placed.len(), 4);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(p.failures[0].reason, FailureReason::Memory);
}

/// A disconnected agent gets no task and is reported as AGENT; DRAINING instances are
/// skipped without a failure of their own.
#[test]
fn agent_disconnected_and_draining() {
    let mut state = Cluster::new()
        .instances(3)
        .with(0, |i| i.connected = false)
        .with(1, |i| i.status = InstanceStatus::Draining)
        .build();
    let req = TaskRequest::new("web", 64, 64);
    let p = place(&mut state, &req, 2, &[], &[], SEED);
    assert_eq!(ids(&p), ["i-2", "i-2"]);
    state.set_status(&"i-2".into(), InstanceStatus::Draining);
    let p = place(&mut state, &req, 1, &[], &[], SEED);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(p.failures[0].reason.as_str(), "AGENT");
    assert_eq!(p.failures[0].detail, "agent disconnected on i-0");
    state.set_connected(&"i-0".into(), true);
    assert_eq!(ids(&place(&mut state, &req, 1, &[], &[], SEED)), ["i-0"]);
    state.set_status(&"i-0".into(), InstanceStatus::Draining);
    let p = place(&mut state, &req, 1, &[], &[], SEED);
    assert_eq!(p.failures[0].reason, FailureReason::NoContainerInstances);
    assert_eq!(
        p.failures[0].detail,
        "no ACTIVE container instance in the cluster (3 DRAINING)"
    );
}

/// An instance without an attribute the task definition requires fails with ATTRIBUTE.
#[test]
fn missing_attribute() {
    let mut state = Cluster::new()
        .instances(2)
        .with(1, |i| {
            i.attributes.insert(
                "com.amazonaws.ecs.capability.docker-remote-api.1.30".into(),
                None,
            );
        })
        .build();
    let mut req = TaskRequest::new("web", 64, 64);
    req.requires_attributes = vec![(
        "com.amazonaws.ecs.capability.docker-remote-api.1.30".into(),
        None,
    )];
    assert_eq!(ids(&place(&mut state, &req, 1, &[], &[], SEED)), ["i-1"]);
    req.requires_attributes = vec![(ATTR_OS_TYPE.into(), Some("windows".into()))];
    let p = place(&mut state, &req, 1, &[], &[], SEED);
    assert_eq!(p.failures[0].reason.as_str(), "ATTRIBUTE");
    assert_eq!(
        p.failures[0].detail,
        "i-0 lacks attribute ecs.os-type=windows required by the task definition (and 1 more)"
    );
}

/// Several reasons at once: one failure per reason, in a fixed order.
#[test]
fn one_failure_per_reason() {
    let mut state = Cluster::new()
        .instances(4)
        .size(1024, 1024)
        .with(0, |i| i.connected = false)
        .with(1, |i| i.registered.memory_mib = 100)
        .with(2, |i| i.registered.cpu_units = 10)
        .with(3, |i| {
            i.attributes.insert("team".into(), Some("blue".into()));
        })
        .build();
    let req = TaskRequest::new("web", 512, 512);
    let p = place(
        &mut state,
        &req,
        1,
        &[],
        &[member("attribute:team != blue")],
        SEED,
    );
    let reasons: Vec<&str> = p.failures.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "AGENT",
            "MemberOf placement constraint unsatisfied.",
            "RESOURCE:CPU",
            "RESOURCE:MEMORY"
        ]
    );
    assert_eq!(
        p.failures[1].detail,
        "i-3 does not match memberOf(attribute:team != blue)"
    );
}

/// Remaining resources are registered minus what runs, and placement keeps them current.
#[test]
fn remaining_resources_track_placements() {
    let mut state = Cluster::new()
        .instances(1)
        .size(1024, 2048)
        .reserved_ports([22])
        .with(0, |i| {
            i.running.push(PlacedTask {
                task_definition_family: "x".into(),
                group: "family:x".into(),
                service: None,
                cpu: 100,
                memory: 200,
                host_ports: vec![8080],
            })
        })
        .build();
    let id = InstanceId::from("i-0");
    let r = state.remaining(&id).unwrap();
    assert_eq!((r.cpu_units, r.memory_mib), (924, 1848));
    assert_eq!(r.ports.iter().copied().collect::<Vec<_>>(), [22, 8080]);
    let mut req = TaskRequest::new("web", 24, 48);
    req.host_ports = vec![80];
    place(&mut state, &req, 1, &[], &[], SEED);
    let r = state.remaining(&id).unwrap();
    assert_eq!((r.cpu_units, r.memory_mib), (900, 1800));
    assert!(r.ports.contains(&80));
    assert_eq!(state.instance(&id).unwrap().running.len(), 2);
}

/// The API shapes parse into typed strategies and constraints, and bad ones are refused.
#[test]
fn api_shapes() {
    assert_eq!(
        PlacementStrategy::from_api("spread", Some("attribute:ecs.availability-zone")),
        Ok(PlacementStrategy::spread_zones())
    );
    assert_eq!(
        PlacementStrategy::from_api("spread", Some("instanceId")),
        Ok(PlacementStrategy::Spread(SpreadField::InstanceId))
    );
    assert_eq!(
        PlacementStrategy::from_api("random", None),
        Ok(PlacementStrategy::Random)
    );
    assert_eq!(
        PlacementStrategy::from_api("binpack", Some("disk")),
        Err(StrategyError::InvalidField {
            kind: "binpack".into(),
            field: "disk".into()
        })
    );
    assert_eq!(
        PlacementStrategy::from_api("spread", Some("ecs.availability-zone")),
        Err(StrategyError::InvalidField {
            kind: "spread".into(),
            field: "ecs.availability-zone".into()
        })
    );
    assert_eq!(
        PlacementStrategy::from_api("pack", None),
        Err(StrategyError::UnknownType("pack".into()))
    );
    assert_eq!(
        PlacementConstraint::from_api("distinctInstance", Some("x")),
        Err(ConstraintError::UnexpectedExpression)
    );
    assert_eq!(
        PlacementConstraint::from_api("memberOf", None),
        Err(ConstraintError::MissingExpression)
    );
    assert_eq!(
        PlacementConstraint::from_api("memberOf", Some("attribute:a ==")),
        Err(ConstraintError::Expression(ParseError::Expected {
            expected: "a value",
            found: "the end".into(),
            at: 14
        }))
    );
    assert_eq!(
        check_limits(&vec![PlacementStrategy::Random; 6], &[]),
        Err(LimitError::TooManyStrategies(6))
    );
    assert_eq!(
        check_limits(&vec![PlacementStrategy::Random; 5], &[]),
        Ok(())
    );
}

/// A duplicate instance id is refused when the state is built.
#[test]
fn duplicate_instances_refused() {
    let mut instances = Cluster::new().instances(2).build_instances();
    instances[1].id = instances[0].id.clone();
    assert_eq!(
        ClusterState::new(instances).unwrap_err(),
        StateError::DuplicateInstance("i-0".into())
    );
}

fn arb_strategy() -> impl Strategy<Value = PlacementStrategy> {
    prop_oneof![
        Just(PlacementStrategy::Binpack(BinpackField::Memory)),
        Just(PlacementStrategy::Binpack(BinpackField::Cpu)),
        Just(PlacementStrategy::Spread(SpreadField::InstanceId)),
        Just(PlacementStrategy::spread_zones()),
        Just(PlacementStrategy::Random),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the strategies, sizes and ports, no instance is ever over-committed:
    /// remaining CPU and memory stay ≥ 0, no host port is used twice, no task lands on a
    /// DRAINING or disconnected instance, and distinctInstance holds.
    #[test]
    fn never_over_commits(
        sizes in proptest::collection::vec((0u32..2048, 0u32..4096, any::<bool>(), any::<bool>()), 1..8),
        requests in proptest::collection::vec((1u32..1024, 1u32..2048, proptest::option::of(80u16..84), 0u32..6, any::<bool>()), 1..6),
        strategies in proptest::collection::vec(arb_strategy(), 0..3),
        seed in any::<u64>(),
    ) {
        let instances: Vec<Instance> = Cluster::new()
            .instances(sizes.len())
            .zones(["a", "b", "c"])
            .build_instances()
            .into_iter()
            .zip(&sizes)
            .map(|(mut inst, &(cpu, mem, draining, disconnected))| {
                inst.registered.cpu_units = cpu;
                inst.registered.memory_mib = mem;
                if draining { inst.status = InstanceStatus::Draining; }
                if disconnected { inst.connected = false; }
                inst
            })
            .collect();
        let mut state = ClusterState::new(instances).unwrap();
        for (n, &(cpu, mem, port, count, distinct)) in requests.iter().enumerate() {
            let mut req = TaskRequest::new(&format!("f{}", n % 2), cpu, mem);
            req.host_ports = port.into_iter().collect();
            let constraints = if distinct { vec![PlacementConstraint::DistinctInstance] } else { vec![] };
            let p = place(&mut state, &req, count, &strategies, &constraints, seed);
            prop_assert!(p.placed.len() as u32 == count || !p.failures.is_empty());
            if distinct {
                let mut seen = std::collections::BTreeSet::new();
                prop_assert!(p.placed.iter().all(|i| seen.insert(i.clone())));
            }
        }
        for inst in state.instances() {
            let r = state.remaining(&inst.id).unwrap();
            prop_assert!(r.cpu_units >= 0 && r.memory_mib >= 0, "{} over-committed", inst.id);
            let mut ports = std::collections::BTreeSet::new();
            for t in &inst.running {
                for p in &t.host_ports {
                    prop_assert!(ports.insert(*p), "port {} twice on {}", p, inst.id);
                }
            }
            if inst.status == InstanceStatus::Draining || !inst.connected {
                prop_assert!(inst.running.is_empty());
            }
        }
    }
}

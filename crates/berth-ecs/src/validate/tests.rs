//! Validation tests: one refusal per rule, each `assert_eq!`-ing the typed error.

use serde_json::{json, Value};

use super::*;
use ValidationError as E;

fn td(v: Value) -> TaskDefInput {
    serde_json::from_value(v).expect("test input parses")
}

/// A minimal valid EC2 definition with container `web`, patched by `f`.
fn base(f: impl FnOnce(&mut Value)) -> Result<Validated, ValidationError> {
    let mut v = json!({
        "family": "web",
        "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 128}]
    });
    f(&mut v);
    validate(&td(v))
}

/// A valid Fargate definition (awsvpc, 256/512), patched by `f`.
fn fargate(f: impl FnOnce(&mut Value)) -> Result<Validated, ValidationError> {
    let mut v = json!({
        "family": "web",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "nginx"}]
    });
    f(&mut v);
    validate(&td(v))
}

fn c0(v: &mut Value) -> &mut Value {
    &mut v["containerDefinitions"][0]
}

/// The minimal definitions are valid; EC2-only unless awsvpc with a Fargate size.
#[test]
fn minimal_definitions_pass() {
    assert_eq!(
        base(|_| {}),
        Ok(Validated {
            cpu: None,
            memory: None,
            network_mode: "bridge".into(),
            compatibilities: vec!["EC2".into()]
        })
    );
    assert_eq!(
        fargate(|_| {}),
        Ok(Validated {
            cpu: Some(256),
            memory: Some(512),
            network_mode: "awsvpc".into(),
            compatibilities: vec!["EC2".into(), "FARGATE".into()]
        })
    );
}

/// Family names follow ECS's grammar.
#[test]
fn family_grammar() {
    for bad in ["", "has space", "dots.no", "slash/no", &"x".repeat(256)] {
        assert_eq!(
            base(|v| v["family"] = json!(bad)),
            Err(E::FamilyName(bad.to_string()))
        );
    }
    assert!(base(|v| v["family"] = json!("A_b-9")).is_ok());
    assert!(base(|v| v["family"] = json!("x".repeat(255))).is_ok());
}

/// Container lists: non-empty, at most 10, unique valid names.
#[test]
fn containers_list_and_names() {
    assert_eq!(
        base(|v| v["containerDefinitions"] = json!([])),
        Err(E::NoContainers)
    );
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("c{i}"), "image": "x", "memory": 64}))
        .collect();
    assert_eq!(
        base(|v| v["containerDefinitions"] = json!(many)),
        Err(E::TooManyContainers(11))
    );
    assert_eq!(
        base(|v| {
            c0(v).as_object_mut().unwrap().remove("name");
        }),
        Err(E::ContainerNameMissing)
    );
    assert_eq!(
        base(|v| c0(v)["name"] = json!("")),
        Err(E::ContainerNameMissing)
    );
    assert_eq!(
        base(|v| c0(v)["name"] = json!("a b")),
        Err(E::ContainerName("a b".into()))
    );
    assert_eq!(
        base(|v| v["containerDefinitions"] = json!([
            {"name": "a", "image": "x", "memory": 64},
            {"name": "a", "image": "y", "memory": 64}
        ])),
        Err(E::DuplicateContainerName("a".into()))
    );
}

/// Every container needs an image.
#[test]
fn image_required() {
    assert_eq!(
        base(|v| {
            c0(v).as_object_mut().unwrap().remove("image");
        }),
        Err(E::ImageRequired("web".into()))
    );
    assert_eq!(
        base(|v| c0(v)["image"] = json!("  ")),
        Err(E::ImageRequired("web".into()))
    );
}

/// Memory: memory or memoryReservation unless the task has memory; reservation <= limit.
#[test]
fn container_memory_rules() {
    assert_eq!(
        base(|v| {
            c0(v).as_object_mut().unwrap().remove("memory");
        }),
        Err(E::MemoryRequired("web".into()))
    );
    assert!(base(|v| {
        c0(v).as_object_mut().unwrap().remove("memory");
        c0(v)["memoryReservation"] = json!(64);
    })
    .is_ok());
    assert!(base(|v| {
        c0(v).as_object_mut().unwrap().remove("memory");
        v["memory"] = json!("512");
    })
    .is_ok());
    assert_eq!(
        base(|v| c0(v)["memoryReservation"] = json!(256)),
        Err(E::MemoryReservationAboveMemory {
            container: "web".into(),
            reservation: 256,
            memory: 128
        })
    );
    assert!(base(|v| c0(v)["memoryReservation"] = json!(128)).is_ok());
    assert_eq!(
        base(|v| c0(v)["memory"] = json!(4)),
        Err(E::ContainerMemoryTooSmall {
            container: "web".into(),
            memory: 4
        })
    );
    assert_eq!(
        base(|v| c0(v)["cpu"] = json!(-1)),
        Err(E::ContainerCpuNegative {
            container: "web".into(),
            cpu: -1
        })
    );
}

/// Containers may not ask for more CPU or memory than the task has.
#[test]
fn container_not_above_task() {
    assert_eq!(
        base(|v| {
            v["cpu"] = json!("512");
            c0(v)["cpu"] = json!(1024);
        }),
        Err(E::ContainerCpuAboveTask("web".into()))
    );
    assert_eq!(
        base(|v| {
            v["memory"] = json!("256");
            c0(v)["memory"] = json!(512);
        }),
        Err(E::ContainerMemoryAboveTask("web".into()))
    );
    assert_eq!(
        base(|v| {
            v["memory"] = json!("256");
            c0(v).as_object_mut().unwrap().remove("memory");
            c0(v)["memoryReservation"] = json!(300);
        }),
        Err(E::ContainerMemoryAboveTask("web".into()))
    );
    assert!(base(|v| {
        v["cpu"] = json!("1 vCPU");
        v["memory"] = json!("1GB");
        c0(v)["cpu"] = json!(1024);
        c0(v)["memory"] = json!(1024);
    })
    .is_ok());
}

/// Task cpu and memory parse as units/vCPU and MiB/GB; garbage is refused.
#[test]
fn task_size_parsing() {
    assert_eq!(parse_task_cpu("1024"), Ok(1024));
    assert_eq!(parse_task_cpu("1 vCPU"), Ok(1024));
    assert_eq!(parse_task_cpu(".25 vcpu"), Ok(256));
    assert_eq!(parse_task_cpu("abc"), Err(E::TaskCpu));
    assert_eq!(parse_task_cpu("64"), Err(E::TaskCpu));
    assert_eq!(parse_task_memory("2 GB"), Ok(2048));
    assert_eq!(parse_task_memory("0.5GB"), Ok(512));
    assert_eq!(parse_task_memory("512"), Ok(512));
    assert_eq!(parse_task_memory("lots"), Err(E::TaskMemory));
    assert_eq!(parse_task_memory("0"), Err(E::TaskMemory));
    assert_eq!(base(|v| v["cpu"] = json!("x")), Err(E::TaskCpu));
    assert_eq!(base(|v| v["memory"] = json!("x")), Err(E::TaskMemory));
}

/// networkMode and requiresCompatibilities take only the known values.
#[test]
fn enums() {
    assert_eq!(
        base(|v| v["networkMode"] = json!("nat")),
        Err(E::NetworkMode("nat".into()))
    );
    for m in ["bridge", "host", "awsvpc", "none"] {
        assert!(base(|v| v["networkMode"] = json!(m)).is_ok(), "{m}");
    }
    assert_eq!(
        base(|v| v["requiresCompatibilities"] = json!(["MARS"])),
        Err(E::Compatibility("MARS".into()))
    );
}

/// FARGATE needs awsvpc, task cpu and memory, in one of Fargate's combinations.
#[test]
fn fargate_requirements() {
    assert_eq!(
        fargate(|v| v["networkMode"] = json!("bridge")),
        Err(E::FargateNetworkMode)
    );
    assert_eq!(
        fargate(|v| {
            v.as_object_mut().unwrap().remove("networkMode");
        }),
        Err(E::FargateNetworkMode)
    );
    assert_eq!(
        fargate(|v| {
            v.as_object_mut().unwrap().remove("cpu");
        }),
        Err(E::FargateCpuRequired)
    );
    assert_eq!(
        fargate(|v| {
            v.as_object_mut().unwrap().remove("memory");
        }),
        Err(E::FargateMemoryRequired)
    );
    assert_eq!(
        fargate(|v| v["memory"] = json!("4096")),
        Err(E::FargateSize {
            cpu: 256,
            memory: 4096
        })
    );
}

/// The Fargate size table, edge by edge.
#[test]
fn fargate_table() {
    let ok = [
        (256, 512),
        (256, 1024),
        (256, 2048),
        (512, 1024),
        (512, 4096),
        (1024, 2048),
        (1024, 8192),
        (2048, 4096),
        (2048, 16384),
        (4096, 8192),
        (4096, 30720),
        (8192, 16384),
        (8192, 20480),
        (8192, 61440),
        (16384, 32768),
        (16384, 40960),
        (16384, 122880),
    ];
    for (c, m) in ok {
        assert!(fargate_size_ok(c, m), "{c}/{m}");
    }
    let bad = [
        (256, 256),
        (256, 1536),
        (256, 3072),
        (512, 512),
        (512, 5120),
        (512, 1536),
        (1024, 1024),
        (1024, 9216),
        (2048, 17408),
        (4096, 31744),
        (8192, 17408),
        (8192, 65536),
        (16384, 36864),
        (16384, 131072),
        (128, 512),
        (3072, 8192),
    ];
    for (c, m) in bad {
        assert!(!fargate_size_ok(c, m), "{c}/{m}");
    }
}

/// Port mappings: ranges, protocol, awsvpc/host equality, no duplicate host ports.
#[test]
fn port_mappings() {
    let pm = |v: &mut Value, m: Value| c0(v)["portMappings"] = m;
    assert_eq!(
        base(|v| pm(v, json!([{"containerPort": 0}]))),
        Err(E::ContainerPort {
            container: "web".into(),
            port: 0
        })
    );
    assert_eq!(
        base(|v| pm(v, json!([{"containerPort": 65536}]))),
        Err(E::ContainerPort {
            container: "web".into(),
            port: 65536
        })
    );
    assert_eq!(
        base(|v| pm(v, json!([{"containerPort": 80, "hostPort": 70000}]))),
        Err(E::HostPort {
            container: "web".into(),
            port: 70000
        })
    );
    assert_eq!(
        base(|v| pm(v, json!([{"hostPort": 80}]))),
        Err(E::ContainerPortMissing("web".into()))
    );
    assert_eq!(
        base(|v| pm(v, json!([{"containerPort": 80, "protocol": "sctp"}]))),
        Err(E::Protocol {
            container: "web".into(),
            protocol: "sctp".into()
        })
    );
    assert_eq!(
        fargate(|v| pm(v, json!([{"containerPort": 80, "hostPort": 8080}]))),
        Err(E::HostPortMismatch {
            mode: "awsvpc".into()
        })
    );
    assert_eq!(
        base(|v| {
            v["networkMode"] = json!("host");
            pm(v, json!([{"containerPort": 80, "hostPort": 81}]));
        }),
        Err(E::HostPortMismatch {
            mode: "host".into()
        })
    );
    // bridge may map any host port, and several dynamic (0) ones.
    assert!(base(|v| pm(
        v,
        json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}, {"containerPort": 82, "hostPort": 0}])
    ))
    .is_ok());
    assert_eq!(
        base(|v| pm(
            v,
            json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}])
        )),
        Err(E::DuplicateHostPort {
            port: 8080,
            protocol: "tcp".into()
        })
    );
    // same port on tcp and udp is fine.
    assert!(fargate(|v| pm(
        v,
        json!([{"containerPort": 53}, {"containerPort": 53, "protocol": "udp"}])
    ))
    .is_ok());
    // across containers of one awsvpc task.
    assert_eq!(
        fargate(|v| v["containerDefinitions"] = json!([
            {"name": "a", "image": "x", "portMappings": [{"containerPort": 80}]},
            {"name": "b", "image": "x", "portMappings": [{"containerPort": 80, "hostPort": 80}]}
        ])),
        Err(E::DuplicateHostPort {
            port: 80,
            protocol: "tcp".into()
        })
    );
    // port ranges are passed through.
    assert!(fargate(|v| pm(v, json!([{"containerPortRange": "8000-8010"}]))).is_ok());
}

fn two(deps: Value, db_extra: Value) -> Result<Validated, ValidationError> {
    let mut db = json!({"name": "db", "image": "postgres", "memory": 256});
    if let (Some(d), Some(e)) = (db.as_object_mut(), db_extra.as_object()) {
        d.extend(e.clone());
    }
    validate(&td(json!({
        "family": "app",
        "containerDefinitions": [
            {"name": "web", "image": "nginx", "memory": 128, "dependsOn": deps},
            db
        ]
    })))
}

/// dependsOn: known targets and conditions; HEALTHY needs a health check.
#[test]
fn depends_on() {
    for cond in ["START", "COMPLETE", "SUCCESS"] {
        assert!(two(
            json!([{"containerName": "db", "condition": cond}]),
            json!({})
        )
        .is_ok());
    }
    assert_eq!(
        two(
            json!([{"containerName": "cache", "condition": "START"}]),
            json!({})
        ),
        Err(E::DependsOnUnknown {
            container: "web".into(),
            target: "cache".into()
        })
    );
    assert_eq!(
        two(
            json!([{"containerName": "db", "condition": "READY"}]),
            json!({})
        ),
        Err(E::DependsOnCondition {
            container: "web".into(),
            condition: "READY".into()
        })
    );
    assert_eq!(
        two(
            json!([{"containerName": "db", "condition": "HEALTHY"}]),
            json!({})
        ),
        Err(E::HealthyWithoutHealthCheck {
            container: "web".into(),
            target: "db".into()
        })
    );
    assert!(two(
        json!([{"containerName": "db", "condition": "HEALTHY"}]),
        json!({"healthCheck": {"command": ["CMD-SHELL", "pg_isready"]}})
    )
    .is_ok());
}

/// Dependency cycles (including self-dependency) are refused.
#[test]
fn dependency_cycles() {
    assert_eq!(
        two(
            json!([{"containerName": "db", "condition": "START"}]),
            json!({"dependsOn": [{"containerName": "web", "condition": "START"}]})
        ),
        Err(E::DependencyCycle("web".into()))
    );
    assert_eq!(
        two(
            json!([{"containerName": "web", "condition": "START"}]),
            json!({})
        ),
        Err(E::DependencyCycle("web".into()))
    );
    // a diamond is not a cycle.
    assert!(validate(&td(json!({
        "family": "d",
        "containerDefinitions": [
            {"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "START"}, {"containerName": "c", "condition": "START"}]},
            {"name": "b", "image": "x", "memory": 64, "dependsOn": [{"containerName": "d", "condition": "START"}]},
            {"name": "c", "image": "x", "memory": 64, "dependsOn": [{"containerName": "d", "condition": "START"}]},
            {"name": "d", "image": "x", "memory": 64}
        ]
    })))
    .is_ok());
}

/// At least one container must be essential (essential defaults to true).
#[test]
fn essential() {
    assert_eq!(
        base(|v| c0(v)["essential"] = json!(false)),
        Err(E::NoEssentialContainer)
    );
    assert!(two(json!([]), json!({"essential": false})).is_ok());
}

/// Health checks: CMD/CMD-SHELL and every field's range, at both edges.
#[test]
fn health_checks() {
    let hc = |h: Value| base(|v| c0(v)["healthCheck"] = h);
    assert!(hc(json!({"command": ["CMD", "true"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0})).is_ok());
    assert!(hc(json!({"command": ["CMD-SHELL", "true"], "interval": 300, "timeout": 60, "retries": 10, "startPeriod": 300})).is_ok());
    for cmd in [
        json!([]),
        json!(["true"]),
        json!(["CMD"]),
        json!(["SHELL", "x"]),
    ] {
        assert_eq!(
            hc(json!({"command": cmd})),
            Err(E::HealthCheckCommand("web".into()))
        );
    }
    for (field, value, min, max) in [
        ("interval", 4, 5, 300),
        ("interval", 301, 5, 300),
        ("timeout", 1, 2, 60),
        ("timeout", 61, 2, 60),
        ("retries", 0, 1, 10),
        ("retries", 11, 1, 10),
        ("startPeriod", -1, 0, 300),
        ("startPeriod", 301, 0, 300),
    ] {
        let mut h = json!({"command": ["CMD", "true"]});
        h[field] = json!(value);
        assert_eq!(
            hc(h),
            Err(E::HealthCheckRange {
                container: "web".into(),
                field,
                min,
                max,
                value
            })
        );
    }
}

/// Messages are ECS's wording where ECS's is known.
#[test]
fn messages() {
    assert_eq!(
        E::FargateSize {
            cpu: 512,
            memory: 512
        }
        .to_string(),
        "No Fargate configuration exists for given values: 512 CPU, 512 memory. See the Amazon ECS documentation for the valid values."
    );
    assert_eq!(
        E::ContainerMemoryAboveTask("worker".into()).to_string(),
        "The 'memory' setting for container 'worker' is greater than for the task."
    );
    assert_eq!(E::TaskCpu.to_string(), "Invalid 'cpu' setting for task.");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn container() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["a", "b", "c", "", "d e"]),
            prop::option::of(prop::sample::select(vec!["img", ""])),
            prop::option::of(-10i64..3000),
            prop::option::of(-10i64..3000),
            prop::option::of(any::<bool>()),
            prop::collection::vec((-5i64..70000, prop::option::of(-5i64..70000)), 0..3),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "c", "x"]),
                    prop::sample::select(vec!["START", "HEALTHY", "SUCCESS", "NOPE"]),
                ),
                0..3,
            ),
            prop::option::of((
                prop::sample::select(vec!["CMD", "CMD-SHELL", "X"]),
                -5i64..400,
            )),
        )
            .prop_map(
                |(name, image, memory, reservation, essential, ports, deps, hc)| {
                    let mut c = json!({"name": name});
                    if let Some(i) = image {
                        c["image"] = json!(i);
                    }
                    if let Some(m) = memory {
                        c["memory"] = json!(m);
                    }
                    if let Some(r) = reservation {
                        c["memoryReservation"] = json!(r);
                    }
                    if let Some(e) = essential {
                        c["essential"] = json!(e);
                    }
                    c["portMappings"] = json!(ports
                        .iter()
                        .map(|(cp, hp)| match hp {
                            Some(h) => json!({"containerPort": cp, "hostPort": h}),
                            None => json!({"containerPort": cp}),
                        })
                        .collect::<Vec<_>>());
                    c["dependsOn"] = json!(deps
                        .iter()
                        .map(|(n, cond)| json!({"containerName": n, "condition": cond}))
                        .collect::<Vec<_>>());
                    if let Some((cmd, interval)) = hc {
                        c["healthCheck"] = json!({"command": [cmd, "true"], "interval": interval});
                    }
                    c
                },
            )
    }

    proptest! {
        /// Task size parsers are total over arbitrary text.
        #[test]
        fn size_parsers_total(s in "\\PC{0,40}") {
            let _ = parse_task_cpu(&s);
            let _ = parse_task_memory(&s);
        }

        /// Validation never panics, and what it accepts has the promised properties:
        /// unique names, an essential container, host ports = container ports in awsvpc,
        /// and FARGATE compatibility only for Fargate sizes.
        #[test]
        fn accepted_definitions_are_sound(
            containers in prop::collection::vec(container(), 0..4),
            mode in prop::sample::select(vec!["bridge", "awsvpc", "host", "nat"]),
            cpu in prop::option::of(prop::sample::select(vec!["256", "512", "1 vCPU", "x"])),
            memory in prop::option::of(prop::sample::select(vec!["512", "1024", "2 GB", "9"])),
            fargate in any::<bool>(),
        ) {
            let mut v = json!({"family": "f", "containerDefinitions": containers, "networkMode": mode});
            if let Some(c) = cpu { v["cpu"] = json!(c); }
            if let Some(m) = memory { v["memory"] = json!(m); }
            if fargate { v["requiresCompatibilities"] = json!(["FARGATE"]); }
            let input = td(v);
            if let Ok(ok) = validate(&input) {
                let names: Vec<_> = input.container_definitions.iter().map(|c| c.name.clone().unwrap()).collect();
                let mut dedup = names.clone();
                dedup.sort();
                dedup.dedup();
                prop_assert_eq!(dedup.len(), names.len());
                prop_assert!(input.container_definitions.iter().any(|c| c.essential.unwrap_or(true)));
                if ok.compatibilities.iter().any(|c| c == "FARGATE") {
                    prop_assert!(fargate_size_ok(ok.cpu.unwrap(), ok.memory.unwrap()));
                    prop_assert_eq!(ok.network_mode.as_str(), "awsvpc");
                }
                if fargate {
                    prop_assert!(ok.compatibilities.iter().any(|c| c == "FARGATE"));
                }
                if mode == "awsvpc" {
                    for c in &input.container_definitions {
                        for p in &c.port_mappings {
                            prop_assert!(p.host_port.is_none() || p.host_port == p.container_port);
                        }
                    }
                }
            }
        }
    }
}

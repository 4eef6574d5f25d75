use super::*;

fn def(name: &str, essential: bool, deps: &[(usize, Condition)]) -> ContainerDef {
    ContainerDef {
        name: name.into(),
        essential,
        depends_on: deps.to_vec(),
        stop_timeout_ms: 1000,
    }
}

fn running() -> Phase {
    Phase::Running {
        term_sent_ms: None,
        kill_sent: false,
    }
}

fn exited(code: i32) -> Phase {
    Phase::Exited {
        exit_code: Some(code),
    }
}

/// Containers without dependencies start at once.
#[test]
fn independent_containers_start() {
    let defs = [def("a", true, &[]), def("b", false, &[])];
    let p = plan(
        &defs,
        &[Phase::Waiting, Phase::Waiting],
        &[Health::Unknown; 2],
        None,
        0,
    );
    assert_eq!(p.actions, vec![Action::Start(0), Action::Start(1)]);
    assert!(!p.done && p.stop.is_none());
}

/// Each condition gates the dependent container until it holds.
#[test]
fn conditions_gate_start() {
    let cases = [
        (Condition::Start, Phase::Waiting, Health::Unknown, false),
        (Condition::Start, running(), Health::Unknown, true),
        (Condition::Complete, running(), Health::Unknown, false),
        (Condition::Complete, exited(3), Health::Unknown, true),
        (Condition::Success, exited(0), Health::Unknown, true),
        (Condition::Healthy, running(), Health::Unknown, false),
        (Condition::Healthy, running(), Health::Healthy, true),
    ];
    for (cond, dep_phase, dep_health, starts) in cases {
        let defs = [def("dep", false, &[]), def("app", true, &[(0, cond)])];
        let p = plan(
            &defs,
            &[dep_phase.clone(), Phase::Waiting],
            &[dep_health, Health::Unknown],
            None,
            0,
        );
        assert_eq!(
            p.actions.contains(&Action::Start(1)),
            starts,
            "{cond:?} {dep_phase:?} {dep_health:?}"
        );
    }
}

/// A condition that can no longer hold abandons the container; an essential one then stops the task.
#[test]
fn impossible_condition_fails() {
    let defs = [
        def("init", false, &[]),
        def("app", true, &[(0, Condition::Success)]),
    ];
    let p = plan(
        &defs,
        &[exited(1), Phase::Waiting],
        &[Health::Unknown; 2],
        None,
        0,
    );
    assert!(
        matches!(&p.actions[..], [Action::Abandon(1, r)] if r.contains("DependencyConditionFailed"))
    );
    let p = plan(
        &defs,
        &[exited(1), Phase::NotStarted { reason: "x".into() }],
        &[Health::Unknown; 2],
        None,
        0,
    );
    assert_eq!(p.stop, Some((StopCode::TaskFailedToStart, "x".into())));
    assert!(p.done);
}

/// An essential container's exit stops the others with SIGTERM, then SIGKILL after the timeout.
#[test]
fn essential_exit_stops_task() {
    let defs = [def("web", true, &[]), def("side", false, &[])];
    let p = plan(
        &defs,
        &[exited(0), running()],
        &[Health::Unknown; 2],
        None,
        0,
    );
    assert_eq!(
        p.stop.as_ref().unwrap().0,
        StopCode::EssentialContainerExited
    );
    assert_eq!(p.actions, vec![Action::Term(1)]);
    let termed = Phase::Running {
        term_sent_ms: Some(100),
        kill_sent: false,
    };
    let stop = Some(StopCode::EssentialContainerExited);
    let p = plan(
        &defs,
        &[exited(0), termed.clone()],
        &[Health::Unknown; 2],
        stop,
        500,
    );
    assert!(p.actions.is_empty(), "within the stop timeout");
    let p = plan(
        &defs,
        &[exited(0), termed],
        &[Health::Unknown; 2],
        stop,
        1100,
    );
    assert_eq!(p.actions, vec![Action::Kill(1)]);
    let p = plan(
        &defs,
        &[exited(0), exited(137)],
        &[Health::Unknown; 2],
        stop,
        1200,
    );
    assert!(p.done);
}

/// A non-essential container's exit does not stop the task.
#[test]
fn non_essential_exit_keeps_task() {
    let defs = [def("web", true, &[]), def("job", false, &[])];
    let p = plan(
        &defs,
        &[running(), exited(1)],
        &[Health::Unknown; 2],
        None,
        0,
    );
    assert!(p.stop.is_none() && p.actions.is_empty() && !p.done);
}

/// A user stop abandons waiting containers and terminates running ones.
#[test]
fn user_stop() {
    let defs = [
        def("db", true, &[]),
        def("app", true, &[(0, Condition::Healthy)]),
    ];
    let p = plan(
        &defs,
        &[running(), Phase::Waiting],
        &[Health::Unknown; 2],
        Some(StopCode::UserInitiated),
        0,
    );
    assert_eq!(p.actions.len(), 2);
    assert!(p.actions.contains(&Action::Term(0)));
    assert!(matches!(p.actions[1], Action::Abandon(1, _)));
}

/// Task health follows the essential containers that have checks.
#[test]
fn task_health_rules() {
    let defs = [
        def("a", true, &[]),
        def("b", true, &[]),
        def("c", false, &[]),
    ];
    let checks = [true, false, true];
    use Health::*;
    assert_eq!(
        task_health(&defs, &[Healthy, Unknown, Unhealthy], &checks),
        Healthy
    );
    assert_eq!(
        task_health(&defs, &[Unhealthy, Unknown, Healthy], &checks),
        Unhealthy
    );
    assert_eq!(
        task_health(&defs, &[Unknown, Unknown, Healthy], &checks),
        Unknown
    );
    assert_eq!(task_health(&defs, &[Unknown; 3], &[false; 3]), Unknown);
}

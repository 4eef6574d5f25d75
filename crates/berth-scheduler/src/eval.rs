//! Evaluating a cluster query against one container instance.
//!
//! Semantics we chose where the guide is silent (each has a test in `tests.rs`):
//! - `!=`, `not_in`, `!~` are the negations of `==`, `in`, `=~`: an instance without the
//!   attribute is `!=` any value.
//! - `=~` patterns: `*` matches any run of characters (including none); every other
//!   character, `.` included, matches itself. The whole value must match.
//! - `>`, `<`, … on attributes compare as numbers when both sides are numbers, else as
//!   strings; an absent or valueless attribute compares false.
//! - `task:group == G` is true when a task of group G runs on the instance;
//!   `task:group =~ P` when one of its groups matches.

use std::cmp::Ordering;

use crate::model::ClusterState;
use crate::parse::parse_date;
use crate::query::{Arg, Expr, Op, Subject};

/// Evaluates `expr` on instance index `i`.
pub(crate) fn eval(expr: &Expr, state: &ClusterState, i: usize) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, state, i) && eval(b, state, i),
        Expr::Or(a, b) => eval(a, state, i) || eval(b, state, i),
        Expr::Not(e) => !eval(e, state, i),
        Expr::Cmp { subject, op, arg } => cmp(subject, *op, arg, state, i),
    }
}

fn cmp(subject: &Subject, op: Op, arg: &Arg, state: &ClusterState, i: usize) -> bool {
    let (inst, live) = (&state.instances[i], &state.live[i]);
    match subject {
        Subject::Attribute(name) => {
            let value = inst.attributes.get(name);
            match op {
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
                _ => value_op(value.and_then(|v| v.as_deref()), op, arg, compare_values),
            }
        }
        Subject::Ec2InstanceId => value_op(Some(&inst.id.0), op, arg, compare_values),
        Subject::AgentConnected => {
            let v = if inst.connected { "true" } else { "false" };
            value_op(Some(v), op, arg, compare_values)
        }
        Subject::RegisteredAt => {
            let Arg::Value(v) = arg else { return false };
            // Validated by the parser; an unparsable date (hand-built tree) matches nothing.
            let Some(t) = parse_date(v) else { return false };
            ordered(inst.registered_at.cmp(&t), op)
        }
        Subject::RunningTasksCount => {
            let Arg::Value(v) = arg else { return false };
            let Ok(n) = v.parse::<u32>() else {
                return false;
            };
            ordered(live.tasks.cmp(&n), op)
        }
        Subject::TaskGroup => {
            let runs = |g: &str| state.group_count(i, g) > 0;
            match (op, arg) {
                (Op::Eq, Arg::Value(v)) => runs(v),
                (Op::Ne, Arg::Value(v)) => !runs(v),
                (Op::In, Arg::List(vs)) => vs.iter().any(|v| runs(v)),
                (Op::NotIn, Arg::List(vs)) => !vs.iter().any(|v| runs(v)),
                (Op::Matches, Arg::Value(p)) => state.groups_on(i).any(|g| wildcard(p, g)),
                (Op::NotMatches, Arg::Value(p)) => !state.groups_on(i).any(|g| wildcard(p, g)),
                _ => false,
            }
        }
    }
}

fn value_op(value: Option<&str>, op: Op, arg: &Arg, order: fn(&str, &str) -> Ordering) -> bool {
    match (op, arg) {
        (Op::Eq, Arg::Value(v)) => value == Some(v.as_str()),
        (Op::Ne, Arg::Value(v)) => value != Some(v.as_str()),
        (Op::In, Arg::List(vs)) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
        (Op::NotIn, Arg::List(vs)) => !value.is_some_and(|x| vs.iter().any(|v| v == x)),
        (Op::Matches, Arg::Value(p)) => value.is_some_and(|x| wildcard(p, x)),
        (Op::NotMatches, Arg::Value(p)) => !value.is_some_and(|x| wildcard(p, x)),
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, Arg::Value(v)) => {
            value.is_some_and(|x| ordered(order(x, v), op))
        }
        _ => false,
    }
}

fn ordered(o: Ordering, op: Op) -> bool {
    match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        _ => false,
    }
}

fn compare_values(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// `*` matches any run of characters; everything else matches itself. Linear-time
/// greedy matching with one backtrack point (the classic wildcard algorithm), on bytes:
/// UTF-8 literals still match only whole characters, and nothing is allocated.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    /// `*` spans any run, `.` is literal, and the whole value must match.
    #[test]
    fn wildcard_patterns() {
        assert!(wildcard("t2.*", "t2.micro"));
        assert!(wildcard("t2.*", "t2."));
        assert!(!wildcard("t2.*", "t2"));
        assert!(!wildcard("t2.*", "t2xmicro"));
        assert!(wildcard("*.large", "m5.large"));
        assert!(!wildcard("*.large", "m5.xlarge2"));
        assert!(wildcard("us-*-1*", "us-east-1a"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("a", "ab"));
        assert!(wildcard("a*b*c", "aXbYbZc"));
        assert!(wildcard("zone-*-é", "zone-x-é"));
        assert!(!wildcard("zone-?", "zone-é"));
    }
}

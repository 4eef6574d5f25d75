//! The cluster query language's syntax tree and its printer.
//!
//! ECS developer guide, "Create expressions to define container instances"
//! (cluster-query-language): `subject operator [argument]`, joined with `and`/`&&`,
//! `or`/`||`, negated with `not(...)`/`!(...)`, grouped with parentheses. Printing
//! parenthesizes every compound operand, so a printed expression parses back to the
//! same tree (a property test holds us to that).

use std::fmt;

/// What an expression tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:NAME`
    Attribute(String),
    /// `ec2InstanceId`
    Ec2InstanceId,
    /// `registeredAt`
    RegisteredAt,
    /// `task:group`: true when a task of that group runs on the instance.
    TaskGroup,
    /// `agentConnected`
    AgentConnected,
    /// `runningTasksCount`
    RunningTasksCount,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::TaskGroup => f.write_str("task:group"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
        }
    }
}

/// The documented operators, printed in their symbol form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=~`: the argument is a pattern where `*` matches any run of characters.
    Matches,
    /// `!~`
    NotMatches,
    /// `in [a, b]`
    In,
    /// `not_in [a, b]` (also `!in`)
    NotIn,
    /// `exists`
    Exists,
    /// `not_exists` (also `!exists`)
    NotExists,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// `exists` / `not_exists` take none.
    None,
    Value(String),
    /// `[a, b, …]` for `in` / `not_in`.
    List(Vec<String>),
}

/// A cluster query expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Cmp { subject: Subject, op: Op, arg: Arg },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    /// Whether the expression's truth on an instance can change after registration:
    /// it reads `task:group` or `runningTasksCount` (placements change them) or
    /// `agentConnected`. The others are evaluated once per instance and cached.
    pub fn varies(&self) -> bool {
        match self {
            Expr::Cmp { subject, .. } => matches!(
                subject,
                Subject::TaskGroup | Subject::RunningTasksCount | Subject::AgentConnected
            ),
            Expr::And(a, b) | Expr::Or(a, b) => a.varies() || b.varies(),
            Expr::Not(e) => e.varies(),
        }
    }

    /// Attribute names the expression reads.
    pub fn attributes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_attributes(&mut out);
        out
    }

    fn collect_attributes<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Cmp {
                subject: Subject::Attribute(name),
                ..
            } => out.push(name),
            Expr::Cmp { .. } => {}
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_attributes(out);
                b.collect_attributes(out);
            }
            Expr::Not(e) => e.collect_attributes(out),
        }
    }
}

/// Characters a value may use without quotes; anything else is printed quoted.
pub(crate) fn is_bare_char(c: char) -> bool {
    !c.is_whitespace() && !"()[],'\"=!<>~&|\\".contains(c) && !c.is_control()
}

const KEYWORDS: &[&str] = &["and", "or", "not", "in", "not_in", "exists", "not_exists"];

fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if !v.is_empty() && v.chars().all(is_bare_char) && !KEYWORDS.contains(&v) {
        return f.write_str(v);
    }
    f.write_str("\"")?;
    for c in v.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    match e {
        Expr::Cmp { .. } | Expr::Not(_) => write!(f, "{e}"),
        _ => write!(f, "({e})"),
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Cmp { subject, op, arg } => {
                write!(f, "{subject} {op}")?;
                match arg {
                    Arg::None => Ok(()),
                    Arg::Value(v) => {
                        f.write_str(" ")?;
                        write_value(f, v)
                    }
                    Arg::List(items) => {
                        f.write_str(" [")?;
                        for (i, v) in items.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write_value(f, v)?;
                        }
                        f.write_str("]")
                    }
                }
            }
            Expr::And(a, b) => {
                write_operand(f, a)?;
                f.write_str(" and ")?;
                write_operand(f, b)
            }
            Expr::Or(a, b) => {
                write_operand(f, a)?;
                f.write_str(" or ")?;
                write_operand(f, b)
            }
            Expr::Not(e) => write!(f, "not({e})"),
        }
    }
}

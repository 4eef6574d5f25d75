//! What the data plane runs: the load balancers' listeners and rules and the target
//! groups with their targets, as the ELBv2 API stored them (field meanings follow
//! botocore's `elbv2` model), and what it reports back: each target's health.
//!
//! Plain data, no behaviour: `berth-elb` builds an [`LbConfig`] from the state store
//! after every change and hands the whole of it to the data plane, which diffs it
//! against what runs (a new configuration never drops a connection in flight).

use serde::{Deserialize, Serialize};

/// Everything the data plane runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbConfig {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

/// An Application Load Balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    /// Seconds a connection may be idle (the `idle_timeout.timeout_seconds` attribute, 60).
    pub idle_timeout_secs: u32,
    pub listeners: Vec<Listener>,
}

/// HTTP (plain) or HTTPS (TLS terminated at the listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Http,
    Https,
}

/// A listener: a port on the load balancer's address and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub arn: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Rules in evaluation order: ascending priority, the default rule last.
    pub rules: Vec<Rule>,
}

/// A listener rule: all conditions must match; the actions are run in `order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub arn: String,
    /// 1..=50000; `None` for the default rule (no conditions, always last).
    pub priority: Option<u32>,
    pub conditions: Vec<Condition>,
    /// The terminal action (forward, fixed-response or redirect).
    pub action: Action,
}

/// A rule condition (ELB's `RuleCondition`); values are ELB's patterns: `*` matches
/// any run of characters, `?` one character; host and method matches are
/// case-insensitive, paths and query strings case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// `path-pattern`: any of the patterns matches the request path (no query string).
    PathPattern(Vec<String>),
    /// `host-header`: any of the patterns matches the Host header (port removed).
    HostHeader(Vec<String>),
    /// `http-request-method`: the method is one of these (exact, upper case).
    HttpMethod(Vec<String>),
    /// `http-header`: the named header (case-insensitive name) matches any pattern.
    HttpHeader { name: String, values: Vec<String> },
    /// `query-string`: any (key pattern or any key, value pattern) pair matches a pair
    /// of the query string.
    QueryString(Vec<(Option<String>, String)>),
    /// `source-ip`: the client address is in one of the CIDRs (`a.b.c.d/n`).
    SourceIp(Vec<String>),
}

/// What a rule does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// To one of the target groups, chosen by weight (0..=999; a group of weight 0 gets
    /// nothing); with stickiness, a client stays with the group for `stickiness_secs`.
    Forward {
        target_groups: Vec<WeightedTargetGroup>,
        stickiness_secs: Option<u32>,
    },
    /// A response made by the load balancer.
    FixedResponse {
        /// 2XX, 4XX or 5XX.
        status: u16,
        content_type: Option<String>,
        body: String,
    },
    /// A redirect; each part may use `#{protocol}`, `#{host}`, `#{port}`, `#{path}`
    /// (without the leading `/`) and `#{query}` (ELB's reserved keys).
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        /// 301 or 302.
        status: u16,
    },
}

/// A target group in a forward action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedTargetGroup {
    pub arn: String,
    pub weight: u32,
}

/// A target group and its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    /// The protocol to the targets.
    pub protocol: Protocol,
    /// The default port of targets registered without one.
    pub port: u16,
    pub health_check: HealthCheck,
    /// Seconds a deregistered target keeps its requests in flight (300 by default).
    pub deregistration_delay_secs: u32,
    /// `lb_cookie` stickiness duration, when enabled.
    pub stickiness_secs: Option<u32>,
    pub targets: Vec<Target>,
}

/// A registered target: an IPv4 address (target type `ip`) or a container instance's
/// address (`instance`), and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// As registered (an IP address, or an instance id the API resolved).
    pub id: String,
    /// The address connections go to.
    pub address: String,
    pub port: u16,
    /// Epoch milliseconds of deregistration: the target is draining until
    /// `deregistered_at_ms + 1000 * deregistration_delay_secs`, then gone.
    pub deregistered_at_ms: Option<u64>,
}

/// A target group's health check (ELB's fields and defaults for HTTP target groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: Protocol,
    /// `None`: the target's traffic port.
    pub port: Option<u16>,
    /// Default `/`.
    pub path: String,
    /// Default 30.
    pub interval_secs: u32,
    /// Default 5.
    pub timeout_secs: u32,
    /// Default 5.
    pub healthy_threshold: u32,
    /// Default 2.
    pub unhealthy_threshold: u32,
    /// Success codes as inclusive ranges (ELB's `Matcher.HttpCode` "200", "200,204",
    /// "200-299"); default 200.
    pub matcher: Vec<(u16, u16)>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            protocol: Protocol::Http,
            port: None,
            path: "/".into(),
            interval_secs: 30,
            timeout_secs: 5,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: vec![(200, 200)],
        }
    }
}

/// A target's state, as DescribeTargetHealth reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl HealthState {
    /// ELB's wire name (`TargetHealthStateEnum`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unused => "unused",
            HealthState::Draining => "draining",
            HealthState::Unavailable => "unavailable",
        }
    }
}

/// One target's health: state, ELB's reason code and a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub state: HealthState,
    /// `Elb.RegistrationInProgress`, `Elb.InitialHealthChecking`,
    /// `Target.ResponseCodeMismatch`, `Target.Timeout`, `Target.FailedHealthChecks`,
    /// `Target.NotRegistered`, `Target.NotInUse`, `Target.DeregistrationInProgress`,
    /// `Target.HealthCheckDisabled`, `Elb.InternalError`.
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// Where the API reads health from (implemented by the data plane).
pub trait HealthSource: Send + Sync {
    /// The health of `target` (`id`, `port`) in target group `tg_arn`, or `None` if
    /// the data plane does not know the target (not registered).
    fn health(&self, tg_arn: &str, id: &str, port: u16) -> Option<TargetHealth>;
}

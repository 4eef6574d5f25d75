//! Choosing where a forward action sends a request: the target group (stickiness
//! cookie, else by weight) and a target in it (stickiness cookie, else round-robin
//! among healthy targets; if none is healthy, among every registered target that is
//! not draining — ELB's fail-open; a draining target never gets a new request).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Target, TargetGroup, WeightedTargetGroup};
use crate::health::HealthMachine;
use crate::rules::choose_weighted;

/// The cookie that keeps a client on one target of a group (ELB's `lb_cookie`).
pub const TARGET_COOKIE: &str = "AWSALB";
/// The cookie that keeps a client on one target group of a forward action.
pub const GROUP_COOKIE: &str = "AWSALBTG";

/// A target's health as the router reads it on every request (one atomic load),
/// with the state machine the checker feeds beside it.
#[derive(Debug, Default)]
pub struct HealthCell {
    routable: AtomicBool,
    machine: Mutex<HealthMachine>,
}

impl HealthCell {
    pub fn routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    /// Runs `f` on the machine and publishes whether the target may take requests.
    pub fn update<R>(&self, f: impl FnOnce(&mut HealthMachine) -> R) -> R {
        let mut m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut m);
        self.routable.store(m.routable(), Ordering::Relaxed);
        r
    }

    pub fn machine(&self) -> HealthMachine {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A registered target as the router sees it.
#[derive(Debug)]
pub struct TargetRt {
    pub config: Target,
    /// `address:port`, what connections go to.
    pub authority: String,
    /// The same as an address.
    pub addr: SocketAddr,
    /// Deregistered: requests in flight finish, no new ones.
    pub draining: bool,
    /// The `AWSALB` value naming this target.
    pub cookie: String,
    pub cell: Arc<HealthCell>,
}

/// A target group as the router sees it.
#[derive(Debug)]
pub struct GroupRt {
    /// The group's settings (its `targets` left empty: see `targets`).
    pub config: TargetGroup,
    /// A listener rule forwards to it.
    pub in_use: bool,
    pub targets: Vec<TargetRt>,
    pub next: AtomicUsize,
}

impl GroupRt {
    fn takes_requests(&self, t: &TargetRt) -> bool {
        !t.draining && (!self.config.health_check.enabled || t.cell.routable())
    }

    /// The target for a new request; `sticky` is the client's `AWSALB` cookie when
    /// the group has stickiness. `None`: no target that is not draining.
    pub fn pick(&self, sticky: Option<&str>) -> Option<&TargetRt> {
        let healthy = self
            .targets
            .iter()
            .filter(|t| self.takes_requests(t))
            .count();
        let eligible = |t: &&TargetRt| {
            if healthy > 0 {
                self.takes_requests(t)
            } else {
                !t.draining
            }
        };
        if let Some(cookie) = sticky {
            if let Some(t) = self
                .targets
                .iter()
                .filter(eligible)
                .find(|t| t.cookie == cookie)
            {
                return Some(t);
            }
        }
        let n = if healthy > 0 {
            healthy
        } else {
            self.targets.iter().filter(|t| !t.draining).count()
        };
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.targets.iter().filter(eligible).nth(i)
    }
}

/// The group of a forward action: the sticky one if the client has its cookie and
/// it is still in the action with a weight above 0, else by weight.
pub fn pick_group<'a>(
    groups: &'a [WeightedTargetGroup],
    sticky: Option<&str>,
    random: u64,
) -> Option<&'a str> {
    if let Some(cookie) = sticky {
        if let Some(g) = groups
            .iter()
            .find(|g| g.weight > 0 && cookie_value(&g.arn) == cookie)
        {
            return Some(&g.arn);
        }
    }
    choose_weighted(groups, random)
}

/// An opaque, stable cookie value for a name (FNV-1a, 64 bits, hex): the cookie
/// says which target or group, without showing addresses or ARNs to clients.
pub fn cookie_value(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    (t ^ (&local as *const u8 as u64)) | 1
}

/// A fast per-thread random number (xorshift64*) for weighted choice: not for
/// secrets, only to spread requests.
pub fn random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{HealthCheck, Protocol};
    use crate::health::Probe;

    /// Target `10.0.0.i:80`.
    pub(crate) fn target(i: u8, draining: bool, healthy: bool) -> TargetRt {
        let cell = Arc::new(HealthCell::default());
        if healthy {
            let check = HealthCheck {
                healthy_threshold: 1,
                ..HealthCheck::default()
            };
            cell.update(|m| m.observe(Probe::Success, &check));
        }
        let authority = format!("10.0.0.{i}:80");
        TargetRt {
            config: Target {
                id: format!("10.0.0.{i}"),
                address: format!("10.0.0.{i}"),
                port: 80,
                deregistered_at_ms: draining.then_some(1),
            },
            cookie: cookie_value(&authority),
            addr: authority.parse().unwrap(),
            authority,
            draining,
            cell,
        }
    }

    /// Group `tg` of `targets`, health checks on if `checks`.
    pub(crate) fn group(targets: Vec<TargetRt>, checks: bool) -> GroupRt {
        GroupRt {
            config: TargetGroup {
                arn: "tg".into(),
                name: "tg".into(),
                protocol: Protocol::Http,
                port: 80,
                health_check: HealthCheck {
                    enabled: checks,
                    ..HealthCheck::default()
                },
                deregistration_delay_secs: 300,
                stickiness_secs: None,
                targets: vec![],
            },
            in_use: true,
            targets,
            next: AtomicUsize::new(0),
        }
    }

    fn picks(g: &GroupRt, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                g.pick(None)
                    .map(|t| t.config.id.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Round-robin over the healthy targets only.
    #[test]
    fn round_robin_over_healthy() {
        let g = group(
            vec![
                target(1, false, true),
                target(2, false, false),
                target(3, false, true),
            ],
            true,
        );
        assert_eq!(
            picks(&g, 4),
            ["10.0.0.1", "10.0.0.3", "10.0.0.1", "10.0.0.3"]
        );
    }

    /// No healthy target: every target not draining (fail open); draining never.
    #[test]
    fn fail_open_skips_draining() {
        let g = group(
            vec![
                target(1, false, false),
                target(2, true, true),
                target(3, false, false),
            ],
            true,
        );
        assert_eq!(picks(&g, 3), ["10.0.0.1", "10.0.0.3", "10.0.0.1"]);
        let only_draining = group(vec![target(2, true, true)], true);
        assert!(only_draining.pick(None).is_none());
        assert!(group(vec![], true).pick(None).is_none());
    }

    /// Health checks disabled: all non-draining targets take requests.
    #[test]
    fn checks_disabled_routes_to_all() {
        let g = group(vec![target(1, false, false), target(2, false, true)], false);
        assert_eq!(picks(&g, 2), ["10.0.0.1", "10.0.0.2"]);
    }

    /// A sticky cookie keeps the client on its target while that target is eligible.
    #[test]
    fn sticky_target() {
        let g = group(vec![target(1, false, true), target(2, false, true)], true);
        let c2 = cookie_value("10.0.0.2:80");
        for _ in 0..3 {
            assert_eq!(g.pick(Some(&c2)).unwrap().config.id, "10.0.0.2");
        }
        let g = group(vec![target(1, false, true), target(2, false, false)], true);
        assert_eq!(g.pick(Some(&c2)).unwrap().config.id, "10.0.0.1");
    }

    /// The sticky group wins while it has weight; else the weighted choice.
    #[test]
    fn sticky_group() {
        let groups = vec![
            WeightedTargetGroup {
                arn: "a".into(),
                weight: 1,
            },
            WeightedTargetGroup {
                arn: "b".into(),
                weight: 0,
            },
            WeightedTargetGroup {
                arn: "c".into(),
                weight: 1,
            },
        ];
        assert_eq!(pick_group(&groups, Some(&cookie_value("c")), 0), Some("c"));
        assert_eq!(pick_group(&groups, Some(&cookie_value("b")), 0), Some("a"));
        assert_eq!(pick_group(&groups, Some("junk"), 1), Some("c"));
    }

    /// Cookies are found by exact name among `;`-separated pairs.
    #[test]
    fn cookies() {
        let h = "a=1; AWSALBTG=x; AWSALB=y";
        assert_eq!(find_cookie(h, TARGET_COOKIE), Some("y"));
        assert_eq!(find_cookie(h, GROUP_COOKIE), Some("x"));
        assert_eq!(find_cookie(h, "b"), None);
        assert_ne!(cookie_value("a"), cookie_value("b"));
        assert_eq!(cookie_value("a").len(), 16);
    }
}

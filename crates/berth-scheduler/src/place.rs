//! Placing tasks: filter the instances a task may go to, order them by the strategies,
//! take the first, update the state, repeat ("Amazon ECS task placement": constraints
//! and resources filter, strategies order).
//!
//! How it stays fast on 10,000 instances. Within one `place` call the request is fixed,
//! so an instance's eligibility and its place in the order change only when a task is
//! placed *on it*. We therefore:
//! - check every instance once when the call starts (resources, ports, agent,
//!   `requiresAttributes`, constraints) and keep only the eligible ones; a `memberOf`
//!   expression that cannot change after registration is evaluated once per instance
//!   and cached in the state across calls, so a call costs ~tens of ns per instance;
//! - split them into partitions by the values of the `spread(attribute:…)` fields
//!   (typically one per Availability Zone; also cached); inside a partition those spread counts are
//!   the same for everyone, so each partition is a min-heap (built in O(n)) over the
//!   remaining per-instance keys (binpack remainders, per-instance spread counts);
//! - per task, compare only the top of each partition (O(partitions + log n)), then
//!   re-check and re-push just the chosen instance; its old heap entry goes stale (a
//!   generation number per instance tells) and is dropped when it reaches the top.
//!
//! Calls placing one or two tasks (RunTask's common case, the service controller's
//! replacements) skip the heaps: each task is one pass that never builds anything per
//! instance. Partitions are visited in the order of their spread counts and a whole
//! partition is skipped when its counts already order after the best so far; inside
//! one, an instance is first tested on dense data (cached memberOf masks, remaining
//! CPU and memory), then its key is compared a position at a time (most lose on the
//! first), and only a would-be best gets the full check. The spread counts come from
//! a per-group list of the instances running the group, not from a pass.
//!
//! Ties left after all strategies are broken by fewest tasks of the request's group on
//! the instance, then by a per-instance rank drawn from the seed. An explicit `random`
//! strategy instead draws uniformly among the tied instances (O(ties) per task).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;

use crate::eval::eval;
use crate::model::{ClusterState, InstanceId, InstanceStatus, Partitions, TaskRequest};
use crate::query::Expr;
use crate::rng::{mix, Rng};
use crate::strategy::{
    default_strategies, BinpackField, PlacementConstraint, PlacementStrategy, SpreadField,
    MAX_STRATEGIES,
};

/// What one `place` call did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// The instance of each task placed, in placement order.
    pub placed: Vec<InstanceId>,
    /// Why the remaining tasks could not be placed (empty when all were): one entry per
    /// reason, naming the instance closest to fitting. Tasks after the first that does
    /// not fit are not attempted: nothing changed, so they would not fit either.
    pub failures: Vec<Failure>,
}

/// An ECS `Failure` (`arn`, `reason`, `detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The container instance ARN (empty for [`FailureReason::NoContainerInstances`]).
    pub arn: String,
    pub reason: FailureReason,
    /// What a person can act on, e.g. "largest free memory: i-2 (256 MiB of the 512 MiB
    /// asked); 3 instances short of memory".
    pub detail: String,
}

/// ECS's failure reasons ("Amazon ECS API failure reasons", RunTask/StartTask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    /// No ACTIVE instance in the cluster (ECS answers RunTask with an
    /// InvalidParameterException carrying this text).
    NoContainerInstances,
    /// `AGENT`: the instance's agent is disconnected.
    Agent,
    /// `ATTRIBUTE`: the instance lacks an attribute the task definition requires.
    MissingAttribute,
    /// A `memberOf` constraint excludes the instance.
    MemberOf,
    /// A `distinctInstance` constraint excludes the instance.
    DistinctInstance,
    /// `RESOURCE:CPU`
    Cpu,
    /// `RESOURCE:MEMORY`
    Memory,
    /// `RESOURCE:PORTS`
    Ports,
}

impl FailureReason {
    /// The `reason` string ECS returns.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NoContainerInstances => {
                "No Container Instances were found in your cluster."
            }
            FailureReason::Agent => "AGENT",
            FailureReason::MissingAttribute => "ATTRIBUTE",
            FailureReason::MemberOf => "MemberOf placement constraint unsatisfied.",
            FailureReason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
            FailureReason::Cpu => "RESOURCE:CPU",
            FailureReason::Memory => "RESOURCE:MEMORY",
            FailureReason::Ports => "RESOURCE:PORTS",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Places `count` tasks of `req` one by one, updating `state` after each.
///
/// Skips DRAINING instances silently (ECS never considers them) and reports
/// disconnected ones as `AGENT`. Empty `strategies` means
/// [`default_strategies`]`(req.service.is_some())`; strategies past the fifth are
/// ignored (see [`crate::check_limits`]). Deterministic for a given `seed`.
pub fn place(
    state: &mut ClusterState,
    req: &TaskRequest,
    count: u32,
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
    seed: u64,
) -> Placement {
    let defaults;
    let strategies = if strategies.is_empty() {
        defaults = default_strategies(req.service.is_some());
        &defaults[..]
    } else {
        strategies
    };
    let mut plan = Plan::new(state, req, strategies, constraints, seed, count);
    let mut out = Placement::default();
    for _ in 0..count {
        match plan.pick(state) {
            Some(i) => {
                plan.commit(state, i);
                out.placed.push(state.instances[i].id.clone());
            }
            None => {
                out.failures = plan.explain(state);
                break;
            }
        }
    }
    out
}

const KEY_LEN: usize = MAX_STRATEGIES + 2;
/// Calls placing at most this many tasks pick each one in a pass over the instances
/// instead of building heaps.
const DIRECT_MAX_COUNT: u32 = 2;
/// An instance's sort key: one entry per strategy, then group count, then seeded rank.
type Key = [i64; KEY_LEN];
type Entry = (Key, u32, u32);

#[derive(Debug, Clone, Copy)]
enum Slot {
    Binpack(BinpackField),
    SpreadInstance,
    /// Spread over attribute slot `k` (a partition-level key).
    SpreadAttr(usize),
}

/// Why an instance cannot take the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    Draining,
    Agent,
    Attribute(usize),
    MemberOf(usize),
    Distinct,
    Cpu,
    Memory,
    Ports,
}

/// A `memberOf` constraint, precompiled: task-independent expressions are looked up
/// in a per-instance mask cached in the state; the others are evaluated each time.
enum Member<'r> {
    Static(usize, &'r Expr, Arc<Vec<bool>>),
    Dynamic(usize, &'r Expr),
}

impl Member<'_> {
    fn holds(&self, state: &ClusterState, i: usize) -> Result<(), usize> {
        let ok = match self {
            Member::Static(_, _, mask) => mask[i],
            Member::Dynamic(_, e) => eval(e, state, i),
        };
        if ok {
            Ok(())
        } else {
            Err(self.index())
        }
    }

    fn index(&self) -> usize {
        match self {
            Member::Static(n, ..) | Member::Dynamic(n, _) => *n,
        }
    }

    fn expr(&self) -> &Expr {
        match self {
            Member::Static(_, e, _) | Member::Dynamic(_, e) => e,
        }
    }
}

struct Plan<'r> {
    req: &'r TaskRequest,
    /// The request's interned group id.
    group: u32,
    slots: Vec<Slot>,
    /// The chain ends with `random` after `slots`.
    random: bool,
    members: Vec<Member<'r>>,
    distinct: bool,
    seed: u64,
    rng: Rng,
    /// Per spread attribute, tasks of the group per value over ACTIVE instances.
    counts: Vec<Vec<i64>>,
    parts: Arc<Partitions>,
    /// Per partition, a min-heap of (key, instance, generation).
    heaps: Vec<BinaryHeap<Reverse<Entry>>>,
    /// For calls placing few tasks: each task is picked in one pass over the instances,
    /// reading their live state (cheaper than building entries or heaps for one or two).
    direct: bool,
    /// Per instance, the generation of its one live heap entry (bumped on every change;
    /// empty when `direct`).
    inst_gen: Vec<u32>,
}

impl<'r> Plan<'r> {
    fn new(
        state: &mut ClusterState,
        req: &'r TaskRequest,
        strategies: &'r [PlacementStrategy],
        constraints: &'r [PlacementConstraint],
        seed: u64,
        count: u32,
    ) -> Self {
        let mut slots = Vec::new();
        let mut random = false;
        let mut attr_names: Vec<String> = Vec::new();
        for s in strategies.iter().take(MAX_STRATEGIES) {
            match s {
                PlacementStrategy::Binpack(f) => slots.push(Slot::Binpack(*f)),
                PlacementStrategy::Spread(SpreadField::InstanceId) => {
                    slots.push(Slot::SpreadInstance)
                }
                PlacementStrategy::Spread(SpreadField::Attribute(name)) => {
                    slots.push(Slot::SpreadAttr(attr_names.len()));
                    attr_names.push(name.clone());
                }
                PlacementStrategy::Random => {
                    // Nothing after random can break a tie random leaves.
                    random = true;
                    break;
                }
            }
        }
        let mut members = Vec::new();
        let mut distinct = false;
        for (n, c) in constraints.iter().enumerate() {
            match c {
                PlacementConstraint::DistinctInstance => distinct = true,
                PlacementConstraint::MemberOf(e) if e.varies() => {
                    members.push(Member::Dynamic(n, e))
                }
                PlacementConstraint::MemberOf(e) => {
                    members.push(Member::Static(n, e, state.static_mask(e)))
                }
            }
        }
        let group = state.group_id(&req.group);
        let parts = state.partitions(&attr_names);
        let state = &*state;

        let n = state.instances.len();
        let k = attr_names.len();
        let mut counts: Vec<Vec<i64>> = parts.values.iter().map(|&v| vec![0; v]).collect();
        // Spread counts over ACTIVE instances, from the instances that run the group.
        if k > 0 {
            for &i in state.group_members(group) {
                let i = i as usize;
                if state.instances[i].status == InstanceStatus::Draining {
                    continue;
                }
                let group_tasks = i64::from(state.live[i].group_count(group));
                for (s, c) in counts.iter_mut().enumerate() {
                    c[parts.inst_vals[i * k + s] as usize] += group_tasks;
                }
            }
        }
        let direct = count <= DIRECT_MAX_COUNT && !random;
        let mut plan = Plan {
            req,
            group,
            slots,
            random,
            members,
            distinct,
            seed,
            rng: Rng::new(seed),
            counts: Vec::new(),
            parts: Arc::clone(&parts),
            heaps: Vec::new(),
            direct,
            inst_gen: Vec::new(),
        };
        plan.counts = counts;
        if direct {
            return plan;
        }
        plan.inst_gen = vec![0; n];
        let mut entries: Vec<Vec<Reverse<Entry>>> = vec![Vec::new(); parts.part_vals.len()];
        for i in 0..n {
            if plan.check(state, i).is_ok() {
                let p = parts.inst_part[i] as usize;
                entries[p].push(Reverse((plan.key(state, i), i as u32, 0)));
            }
        }
        plan.heaps = entries.into_iter().map(BinaryHeap::from).collect();
        plan
    }

    /// Checks instance `i` against the request, first failing check first.
    fn check(&self, state: &ClusterState, i: usize) -> Result<(), Reject> {
        let inst = &state.instances[i];
        let live = &state.live[i];
        let req = self.req;
        if inst.status == InstanceStatus::Draining {
            return Err(Reject::Draining);
        }
        if !inst.connected {
            return Err(Reject::Agent);
        }
        for (a, (name, value)) in req.requires_attributes.iter().enumerate() {
            match inst.attributes.get(name) {
                Some(have) if value.is_none() || have == value => {}
                _ => return Err(Reject::Attribute(a)),
            }
        }
        for m in &self.members {
            m.holds(state, i).map_err(Reject::MemberOf)?;
        }
        if self.distinct && live.group_count(self.group) > 0 {
            return Err(Reject::Distinct);
        }
        if live.cpu < i64::from(req.cpu) {
            return Err(Reject::Cpu);
        }
        if live.memory < i64::from(req.memory) {
            return Err(Reject::Memory);
        }
        if req.host_ports.iter().any(|p| live.ports.contains(p)) {
            return Err(Reject::Ports);
        }
        Ok(())
    }

    /// True when instance `i` surely cannot take the task, from the data that is cheap
    /// to read per instance (cached memberOf masks, remaining CPU and memory); false
    /// says nothing: [`Plan::check`] decides.
    fn quick_reject(&self, state: &ClusterState, i: usize) -> bool {
        let live = &state.live[i];
        live.cpu < i64::from(self.req.cpu)
            || live.memory < i64::from(self.req.memory)
            || self
                .members
                .iter()
                .any(|m| matches!(m, Member::Static(_, _, mask) if !mask[i]))
    }

    fn key(&self, state: &ClusterState, i: usize) -> Key {
        let live = &state.live[i];
        let group = i64::from(live.group_count(self.group));
        let mut key = [0; KEY_LEN];
        for (pos, slot) in self.slots.iter().enumerate() {
            key[pos] = match slot {
                Slot::Binpack(BinpackField::Cpu) => live.cpu,
                Slot::Binpack(BinpackField::Memory) => live.memory,
                Slot::SpreadInstance => group,
                Slot::SpreadAttr(_) => 0,
            };
        }
        key[self.slots.len()] = group;
        key[self.slots.len() + 1] = (mix(self.seed ^ mix(i as u64)) >> 1) as i64;
        key
    }

    /// The key with the partition-level spread counts filled in.
    fn full(&self, mut key: Key, part: usize) -> Key {
        for (pos, slot) in self.slots.iter().enumerate() {
            if let Slot::SpreadAttr(k) = slot {
                key[pos] = self.counts[*k][self.parts.part_vals[part][*k] as usize];
            }
        }
        key
    }

    /// Instance `i`'s full key (partition spread counts filled in) when (key, `i`)
    /// orders before `than`; None otherwise. Computes the key a position at a time and
    /// stops at the first that orders after `than`, so most instances cost a field
    /// read or two (no group lookup, no rank hash).
    fn full_key_before(&self, state: &ClusterState, i: usize, than: &(Key, u32)) -> Option<Key> {
        let (best, best_i) = than;
        let live = &state.live[i];
        let part = self.parts.inst_part[i] as usize;
        let n = self.slots.len();
        let mut key = [0; KEY_LEN];
        let mut group: Option<i64> = None;
        let mut group_count =
            || *group.get_or_insert_with(|| i64::from(live.group_count(self.group)));
        for pos in 0..n + 2 {
            key[pos] = match self.slots.get(pos) {
                Some(Slot::Binpack(BinpackField::Cpu)) => live.cpu,
                Some(Slot::Binpack(BinpackField::Memory)) => live.memory,
                Some(Slot::SpreadInstance) => group_count(),
                Some(Slot::SpreadAttr(k)) => {
                    self.counts[*k][self.parts.part_vals[part][*k] as usize]
                }
                None if pos == n => group_count(),
                None => (mix(self.seed ^ mix(i as u64)) >> 1) as i64,
            };
            match key[pos].cmp(&best[pos]) {
                std::cmp::Ordering::Less => {
                    return Some(self.full(self.key(state, i), part));
                }
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal => {}
            }
        }
        ((i as u32) < *best_i).then_some(key)
    }

    /// Re-checks instance `i` (its state just changed) and re-pushes it if eligible.
    fn refresh(&mut self, state: &ClusterState, i: usize) {
        if self.direct {
            // The next pass reads the instance's new state.
            return;
        }
        let p = self.parts.inst_part[i];
        self.inst_gen[i] = self.inst_gen[i].wrapping_add(1);
        if self.check(state, i).is_ok() {
            let entry = (self.key(state, i), i as u32, self.inst_gen[i]);
            self.heaps[p as usize].push(Reverse(entry));
        }
    }

    fn live(&self, &(_, i, gen): &Entry) -> bool {
        self.inst_gen[i as usize] == gen
    }

    fn pick(&mut self, state: &ClusterState) -> Option<usize> {
        let mut best: Option<(Key, u32)> = None;
        if self.direct {
            // The same order as the heaps: (full key, instance index), smallest first.
            // Partitions in the order of their leading spread counts (the key positions
            // that are the same for all their instances); a partition whose counts
            // already order after the best so far holds nothing better, nor do the rest.
            let lead = self
                .slots
                .iter()
                .take_while(|s| matches!(s, Slot::SpreadAttr(_)))
                .count();
            let mut parts: Vec<(Key, usize)> = (0..self.parts.members.len())
                .map(|p| (self.full([0; KEY_LEN], p), p))
                .collect();
            parts.sort_unstable_by(|a, b| a.0[..lead].cmp(&b.0[..lead]));
            for (prefix, p) in parts {
                if best.is_some_and(|(b, _)| prefix[..lead] > b[..lead]) {
                    break;
                }
                // Dense checks first (cached memberOf masks, resources), then the
                // ordering (most instances lose there), then the full check.
                for &i in &self.parts.members[p] {
                    let i = i as usize;
                    if self.quick_reject(state, i) {
                        continue;
                    }
                    let f = match &best {
                        Some(b) => match self.full_key_before(state, i, b) {
                            Some(f) => f,
                            None => continue,
                        },
                        None => self.full(self.key(state, i), p),
                    };
                    if self.check(state, i).is_ok() {
                        best = Some((f, i as u32));
                    }
                }
            }
            return best.map(|(_, i)| i as usize);
        }
        for p in 0..self.heaps.len() {
            while let Some(Reverse(top)) = self.heaps[p].peek() {
                if self.live(top) {
                    break;
                }
                self.heaps[p].pop();
            }
            if let Some(&Reverse((k, i, _))) = self.heaps[p].peek() {
                let f = self.full(k, p);
                if best.is_none_or(|b| (f, i) < b) {
                    best = Some((f, i));
                }
            }
        }
        let (best_key, best_i) = best?;
        if !self.random {
            return Some(best_i as usize);
        }
        // `random`: uniform among the instances tied with the best on the strategies
        // before it. Heap order is partial, so look at every live entry (O(n)).
        let r = self.slots.len();
        let mut ties = Vec::new();
        for (p, heap) in self.heaps.iter().enumerate() {
            for Reverse(e) in heap.iter() {
                if self.live(e) && self.full(e.0, p)[..r] == best_key[..r] {
                    ties.push(e.1);
                }
            }
        }
        // Heap iteration order is an implementation detail; sort so the seed decides.
        ties.sort_unstable();
        Some(ties[self.rng.below(ties.len())] as usize)
    }

    fn commit(&mut self, state: &mut ClusterState, i: usize) {
        state.record(i, self.req, self.group);
        let k = self.counts.len();
        for s in 0..k {
            let v = self.parts.inst_vals[i * k + s] as usize;
            self.counts[s][v] += 1;
        }
        self.refresh(state, i);
    }

    /// Why no instance takes the task: per reason, how many instances and the closest.
    fn explain(&self, state: &ClusterState) -> Vec<Failure> {
        let req = self.req;
        // reason → (instances, closest instance, its closeness score: higher is closer)
        let mut by_reason: Vec<(FailureReason, Reject, usize, usize, i64)> = Vec::new();
        let mut draining = 0;
        for i in 0..state.instances.len() {
            let reject = match self.check(state, i) {
                Ok(()) => continue,
                Err(Reject::Draining) => {
                    draining += 1;
                    continue;
                }
                Err(r) => r,
            };
            let live = &state.live[i];
            let (reason, score) = match reject {
                Reject::Draining => unreachable!("handled above"),
                Reject::Agent => (FailureReason::Agent, 0),
                Reject::Attribute(_) => (FailureReason::MissingAttribute, 0),
                Reject::MemberOf(_) => (FailureReason::MemberOf, 0),
                Reject::Distinct => (FailureReason::DistinctInstance, 0),
                Reject::Cpu => (FailureReason::Cpu, live.cpu),
                Reject::Memory => (FailureReason::Memory, live.memory),
                Reject::Ports => (
                    FailureReason::Ports,
                    -(req
                        .host_ports
                        .iter()
                        .filter(|p| live.ports.contains(p))
                        .count() as i64),
                ),
            };
            match by_reason.iter_mut().find(|e| e.0 == reason) {
                Some(e) => {
                    e.2 += 1;
                    if score > e.4 {
                        (e.1, e.3, e.4) = (reject, i, score);
                    }
                }
                None => by_reason.push((reason, reject, 1, i, score)),
            }
        }
        if by_reason.is_empty() {
            return vec![Failure {
                arn: String::new(),
                reason: FailureReason::NoContainerInstances,
                detail: format!(
                    "no ACTIVE container instance in the cluster ({draining} DRAINING)"
                ),
            }];
        }
        by_reason.sort_by_key(|e| e.0);
        by_reason
            .into_iter()
            .map(|(reason, reject, count, i, _)| {
                let inst = &state.instances[i];
                let live = &state.live[i];
                let more = if count > 1 {
                    format!(" (and {} more)", count - 1)
                } else {
                    String::new()
                };
                let detail = match reject {
                    Reject::Draining => unreachable!("never recorded"),
                    Reject::Agent => format!("agent disconnected on {}{more}", inst.id),
                    Reject::Attribute(a) => {
                        let (name, value) = &req.requires_attributes[a];
                        let want = match value {
                            Some(v) => format!("{name}={v}"),
                            None => name.clone(),
                        };
                        format!("{} lacks attribute {want} required by the task definition{more}", inst.id)
                    }
                    Reject::MemberOf(n) => {
                        let expr = match self.members.iter().find(|m| m.index() == n) {
                            Some(m) => m.expr().to_string(),
                            None => String::new(),
                        };
                        format!("{} does not match memberOf({expr}){more}", inst.id)
                    }
                    Reject::Distinct => format!(
                        "{} already runs a task of group {}{more}",
                        inst.id, req.group
                    ),
                    Reject::Cpu => format!(
                        "largest free CPU: {} ({} of the {} CPU units asked); {count} instance(s) short of CPU",
                        inst.id, live.cpu, req.cpu
                    ),
                    Reject::Memory => format!(
                        "largest free memory: {} ({} MiB of the {} MiB asked); {count} instance(s) short of memory",
                        inst.id, live.memory, req.memory
                    ),
                    Reject::Ports => {
                        let taken: Vec<String> = req
                            .host_ports
                            .iter()
                            .filter(|p| live.ports.contains(p))
                            .map(u16::to_string)
                            .collect();
                        format!(
                            "fewest ports taken: {} (host port {} in use); {count} instance(s) short of ports",
                            inst.id,
                            taken.join(", ")
                        )
                    }
                };
                Failure {
                    arn: inst.arn.clone(),
                    reason,
                    detail,
                }
            })
            .collect()
    }
}

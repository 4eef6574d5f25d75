//! Amazon ECR lifecycle policies: parse and validate the policy text that
//! `PutLifecyclePolicy` and `StartLifecyclePolicyPreview` receive, and evaluate
//! the policy over a repository's images.
//!
//! Boundary: this module is pure. It does no I/O and reads no clock; the
//! caller hands in the images and "now". Turning a [`PolicyError`] into ECR's
//! `InvalidParameterException` ("Invalid parameter at 'LifecyclePolicyText'
//! failed to satisfy constraint: '...'") and deleting the expired images are
//! the API layer's job.
//!
//! Semantics follow the ECR user guide, "Lifecycle policy properties" and
//! "How lifecycle policies work":
//! - rules are evaluated in ascending `rulePriority`;
//! - an image selected by a rule (whether that rule expires it or keeps it) is
//!   not considered by any rule with a lower priority (higher number);
//! - when `tagPrefixList` or `tagPatternList` lists several entries, only
//!   images carrying tags that match *all* of them are selected;
//! - a rule with `tagStatus` `any` must have the highest `rulePriority`.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// Shortest policy text ECR accepts, in characters (API reference,
/// `PutLifecyclePolicy`, `lifecyclePolicyText` length constraints).
pub const MIN_POLICY_TEXT_CHARS: usize = 100;
/// Longest policy text ECR accepts, in characters.
pub const MAX_POLICY_TEXT_CHARS: usize = 30_720;
/// Most `*` wildcards one `tagPatternList` entry may hold.
pub const MAX_WILDCARDS_PER_PATTERN: usize = 4;
/// Seconds in one `countUnit` of `days`.
pub const SECONDS_PER_DAY: u64 = 86_400;

/// One image of a repository, as evaluation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Manifest digest, e.g. `sha256:...`; expected unique within a repository.
    pub digest: String,
    /// Tags pointing at the image; empty for an untagged image.
    pub tags: Vec<String>,
    /// When the image was pushed, in seconds since the Unix epoch.
    pub pushed_at_unix: u64,
}

/// An image a policy expires, and the rule that expires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    /// Manifest digest of the expired image.
    pub digest: String,
    /// Tags the image carried.
    pub tags: Vec<String>,
    /// When the image was pushed, in seconds since the Unix epoch.
    pub pushed_at_unix: u64,
    /// `rulePriority` of the rule that expires it (ECR's `appliedRulePriority`).
    pub rule_priority: u32,
}

/// A validated lifecycle policy; its rules are held in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `rulePriority`: lower is evaluated first.
    pub priority: u32,
    /// `description`, free text.
    pub description: Option<String>,
    /// Which images the rule selects by their tags.
    pub tags: TagSelection,
    /// Which of the selected images the rule expires.
    pub count: Count,
}

/// `selection.tagStatus` with its tag filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSelection {
    /// `tagged`: images with at least one tag, passing the filter.
    Tagged(TagFilter),
    /// `untagged`: images with no tags.
    Untagged,
    /// `any`: every image.
    Any,
}

/// The tag filter of a `tagged` rule. Every entry must be matched by at least
/// one of the image's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// `tagPrefixList`: literal tag prefixes.
    Prefixes(Vec<String>),
    /// `tagPatternList`: whole-tag patterns where `*` matches any run of characters.
    Patterns(Vec<String>),
}

/// `selection.countType` with its `countNumber`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `imageCountMoreThan`: keep the newest N selected images, expire the rest.
    ImageCountMoreThan(u32),
    /// `sinceImagePushed` in `days`: expire selected images pushed more than N days ago.
    SinceImagePushedDays(u32),
}

/// Which rule an error is about: its `rulePriority` once that is known to be
/// valid, otherwise its position in the `rules` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    /// The rule with this `rulePriority`.
    Priority(u32),
    /// The rule at this zero-based index of `rules`.
    Index(usize),
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Priority(p) => write!(f, "rule with rulePriority {p}"),
            RuleRef::Index(i) => write!(f, "rules[{i}]"),
        }
    }
}

/// Why a policy text was rejected. Messages are what the user sees inside
/// ECR's `InvalidParameterException`, so each names the rule and the field.
/// JSON errors are carried as text rather than as `#[source]` so that the
/// enum can derive `PartialEq` for tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("lifecycle policy text is {len} characters; at least {min} are required")]
    TooShort { len: usize, min: usize },
    #[error("lifecycle policy text is {len} characters; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("lifecycle policy text is not valid JSON: {message}")]
    Json { message: String },
    #[error("lifecycle policy must be a JSON object with a \"rules\" array: {message}")]
    Shape { message: String },
    #[error("lifecycle policy has no rules; at least one rule is required")]
    NoRules,
    #[error("{rule}: {part} is malformed: {message}")]
    Malformed {
        rule: RuleRef,
        part: &'static str,
        message: String,
    },
    #[error("{rule}: {field} is required")]
    MissingField { rule: RuleRef, field: &'static str },
    #[error(
        "rules[{index}]: rulePriority must be an integer from 1 to {}, got {value}",
        u32::MAX
    )]
    InvalidRulePriority { index: usize, value: String },
    #[error("rulePriority {priority} is used by more than one rule; priorities must be unique")]
    DuplicateRulePriority { priority: u32 },
    #[error(
        "rule with rulePriority {priority}: tagStatus must be \"tagged\", \"untagged\" or \"any\", got {value:?}"
    )]
    InvalidTagStatus { priority: u32, value: String },
    #[error(
        "rule with rulePriority {priority}: tagStatus \"tagged\" requires tagPrefixList or tagPatternList"
    )]
    TagListRequired { priority: u32 },
    #[error(
        "rule with rulePriority {priority}: tagPrefixList and tagPatternList cannot both be set; use one of them"
    )]
    TagListsExclusive { priority: u32 },
    #[error(
        "rule with rulePriority {priority}: {field} is only allowed with tagStatus \"tagged\", not {tag_status:?}"
    )]
    TagListForbidden {
        priority: u32,
        field: &'static str,
        tag_status: &'static str,
    },
    #[error("rule with rulePriority {priority}: {field} must list at least one entry")]
    EmptyTagList { priority: u32, field: &'static str },
    #[error("rule with rulePriority {priority}: {field} contains an empty string")]
    EmptyTagEntry { priority: u32, field: &'static str },
    #[error(
        "rule with rulePriority {priority}: tagPatternList entry {pattern:?} has {count} wildcards; at most {max} are allowed",
        max = MAX_WILDCARDS_PER_PATTERN
    )]
    TooManyWildcards {
        priority: u32,
        pattern: String,
        count: usize,
    },
    #[error(
        "rule with rulePriority {priority}: countType must be \"imageCountMoreThan\" or \"sinceImagePushed\", got {value:?}"
    )]
    InvalidCountType { priority: u32, value: String },
    #[error(
        "rule with rulePriority {priority}: countNumber must be an integer from 1 to {}, got {value}",
        u32::MAX
    )]
    InvalidCountNumber { priority: u32, value: i64 },
    #[error(
        "rule with rulePriority {priority}: countUnit \"days\" is required when countType is \"sinceImagePushed\""
    )]
    CountUnitRequired { priority: u32 },
    #[error(
        "rule with rulePriority {priority}: countUnit is not allowed when countType is \"imageCountMoreThan\""
    )]
    CountUnitForbidden { priority: u32 },
    #[error("rule with rulePriority {priority}: countUnit must be \"days\", got {value:?}")]
    InvalidCountUnit { priority: u32, value: String },
    #[error("rule with rulePriority {priority}: action type must be \"expire\", got {value:?}")]
    InvalidActionType { priority: u32, value: String },
    #[error(
        "rule with rulePriority {priority}: a rule with tagStatus \"any\" must have the highest rulePriority, but rulePriority {highest} is higher"
    )]
    AnyNotLast { priority: u32, highest: u32 },
}

/// The policy document's top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<Value>,
}

/// One rule; `rulePriority` is read before this, so that later errors can name it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    /// Already validated from the raw object by `rule_priority`.
    #[serde(rename = "rulePriority")]
    _rule_priority: Option<IgnoredAny>,
    description: Option<String>,
    selection: Option<Value>,
    action: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelection {
    tag_status: Option<String>,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    count_type: Option<String>,
    count_unit: Option<String>,
    count_number: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Policy {
    /// Parses and validates lifecycle policy text. Errors are reported for the
    /// first offending rule in document order.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let len = text.chars().count();
        if len < MIN_POLICY_TEXT_CHARS {
            return Err(PolicyError::TooShort {
                len,
                min: MIN_POLICY_TEXT_CHARS,
            });
        }
        if len > MAX_POLICY_TEXT_CHARS {
            return Err(PolicyError::TooLong {
                len,
                max: MAX_POLICY_TEXT_CHARS,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json {
            message: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(PolicyError::Shape {
                message: format!("expected a JSON object, got {}", json_kind(&value)),
            });
        }
        let raw: RawPolicy = serde_json::from_value(value).map_err(|e| PolicyError::Shape {
            message: e.to_string(),
        })?;
        if raw.rules.is_empty() {
            return Err(PolicyError::NoRules);
        }

        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, value) in raw.rules.into_iter().enumerate() {
            let rule = parse_rule(index, value)?;
            if !seen.insert(rule.priority) {
                return Err(PolicyError::DuplicateRulePriority {
                    priority: rule.priority,
                });
            }
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.priority);

        // "A rule with a tagStatus value of any must have the highest value
        // for rulePriority and be evaluated last."
        let highest = rules.last().map_or(0, |r| r.priority);
        if let Some(any) = rules
            .iter()
            .find(|r| r.tags == TagSelection::Any && r.priority != highest)
        {
            return Err(PolicyError::AnyNotLast {
                priority: any.priority,
                highest,
            });
        }
        Ok(Policy { rules })
    }

    /// The rules in evaluation order (ascending `rulePriority`).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The images this policy expires at `now_unix` (seconds since the Unix
    /// epoch), each at most once.
    ///
    /// Output order: by rule priority; within one rule newest push first, and
    /// images pushed at the same second by ascending digest. The same order
    /// decides which images `imageCountMoreThan` keeps.
    pub fn evaluate(&self, images: &[Image], now_unix: u64) -> Vec<Expiration> {
        // An image is "claimed" once any rule selects it, expired or kept.
        let mut claimed = vec![false; images.len()];
        let mut expired = Vec::new();
        for rule in &self.rules {
            let mut selected: Vec<usize> = (0..images.len())
                .filter(|&i| !claimed[i] && rule.tags.selects(&images[i].tags))
                .collect();
            selected.sort_by(|&a, &b| newest_first(&images[a], &images[b]));
            for &i in &selected {
                claimed[i] = true;
            }
            let doomed = selected
                .iter()
                .enumerate()
                .filter(|&(rank, &i)| match rule.count {
                    Count::ImageCountMoreThan(n) => rank >= n as usize,
                    Count::SinceImagePushedDays(days) => {
                        now_unix.saturating_sub(images[i].pushed_at_unix)
                            > u64::from(days) * SECONDS_PER_DAY
                    }
                });
            expired.extend(doomed.map(|(_, &i)| Expiration {
                digest: images[i].digest.clone(),
                tags: images[i].tags.clone(),
                pushed_at_unix: images[i].pushed_at_unix,
                rule_priority: rule.priority,
            }));
        }
        expired
    }
}

impl TagSelection {
    /// Whether an image carrying `tags` is selected.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self {
            TagSelection::Any => true,
            TagSelection::Untagged => tags.is_empty(),
            TagSelection::Tagged(filter) => !tags.is_empty() && filter.matches(tags),
        }
    }
}

impl TagFilter {
    /// Whether every entry of the filter is matched by at least one of `tags`.
    pub fn matches(&self, tags: &[String]) -> bool {
        match self {
            TagFilter::Prefixes(prefixes) => prefixes
                .iter()
                .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
            TagFilter::Patterns(patterns) => patterns
                .iter()
                .all(|p| tags.iter().any(|t| wildcard_match(p, t))),
        }
    }
}

/// Newest push first; equal push times by ascending digest, so ties are
/// broken the same way on every run.
fn newest_first(a: &Image, b: &Image) -> Ordering {
    b.pushed_at_unix
        .cmp(&a.pushed_at_unix)
        .then_with(|| a.digest.cmp(&b.digest))
}

/// Whole-string match where `*` matches any run of characters (including
/// none) and every other character matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    // Byte-wise is safe: `*` is ASCII, and literal runs of valid UTF-8 can
    // only match at character boundaries of valid UTF-8.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen, and the text position it is retried from.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            pi += 1;
            backtrack = Some((pi, ti));
        } else if p.get(pi) == Some(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = backtrack {
            // Let the last `*` swallow one more character and retry.
            pi = star_p;
            ti = star_t + 1;
            backtrack = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_rule(index: usize, value: Value) -> Result<Rule, PolicyError> {
    let Value::Object(object) = value else {
        return Err(PolicyError::Malformed {
            rule: RuleRef::Index(index),
            part: "rule",
            message: format!("expected a JSON object, got {}", json_kind(&value)),
        });
    };
    let priority = rule_priority(index, &object)?;
    let rule = RuleRef::Priority(priority);
    let raw: RawRule =
        serde_json::from_value(Value::Object(object)).map_err(|e| PolicyError::Malformed {
            rule,
            part: "rule",
            message: e.to_string(),
        })?;

    let selection = raw.selection.ok_or(PolicyError::MissingField {
        rule,
        field: "selection",
    })?;
    let selection: RawSelection =
        serde_json::from_value(selection).map_err(|e| PolicyError::Malformed {
            rule,
            part: "selection",
            message: e.to_string(),
        })?;
    let action = raw.action.ok_or(PolicyError::MissingField {
        rule,
        field: "action",
    })?;
    let action: RawAction = serde_json::from_value(action).map_err(|e| PolicyError::Malformed {
        rule,
        part: "action",
        message: e.to_string(),
    })?;

    let tags = tag_selection(priority, &selection)?;
    let count = count(priority, &selection)?;
    match action.kind.as_deref() {
        None => {
            return Err(PolicyError::MissingField {
                rule,
                field: "action.type",
            })
        }
        Some("expire") => {}
        Some(other) => {
            return Err(PolicyError::InvalidActionType {
                priority,
                value: other.to_owned(),
            })
        }
    }
    Ok(Rule {
        priority,
        description: raw.description,
        tags,
        count,
    })
}

fn rule_priority(index: usize, object: &Map<String, Value>) -> Result<u32, PolicyError> {
    match object.get("rulePriority") {
        None | Some(Value::Null) => Err(PolicyError::MissingField {
            rule: RuleRef::Index(index),
            field: "rulePriority",
        }),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| PolicyError::InvalidRulePriority {
                index,
                value: value.to_string(),
            }),
    }
}

fn tag_selection(priority: u32, selection: &RawSelection) -> Result<TagSelection, PolicyError> {
    let prefixes = selection.tag_prefix_list.as_ref();
    let patterns = selection.tag_pattern_list.as_ref();
    let untagged_or_any = match selection.tag_status.as_deref() {
        None => {
            return Err(PolicyError::MissingField {
                rule: RuleRef::Priority(priority),
                field: "selection.tagStatus",
            })
        }
        Some("tagged") => None,
        Some("untagged") => Some(("untagged", TagSelection::Untagged)),
        Some("any") => Some(("any", TagSelection::Any)),
        Some(other) => {
            return Err(PolicyError::InvalidTagStatus {
                priority,
                value: other.to_owned(),
            })
        }
    };
    if let Some((tag_status, tags)) = untagged_or_any {
        let forbidden = match (prefixes, patterns) {
            (None, None) => return Ok(tags),
            (Some(_), _) => "tagPrefixList",
            (None, Some(_)) => "tagPatternList",
        };
        return Err(PolicyError::TagListForbidden {
            priority,
            field: forbidden,
            tag_status,
        });
    }
    let (field, entries) = match (prefixes, patterns) {
        (Some(_), Some(_)) => return Err(PolicyError::TagListsExclusive { priority }),
        (None, None) => return Err(PolicyError::TagListRequired { priority }),
        (Some(p), None) => ("tagPrefixList", p),
        (None, Some(p)) => ("tagPatternList", p),
    };
    if entries.is_empty() {
        return Err(PolicyError::EmptyTagList { priority, field });
    }
    if entries.iter().any(String::is_empty) {
        return Err(PolicyError::EmptyTagEntry { priority, field });
    }
    if field == "tagPrefixList" {
        return Ok(TagSelection::Tagged(TagFilter::Prefixes(entries.clone())));
    }
    if let Some(pattern) = entries
        .iter()
        .find(|p| p.matches('*').count() > MAX_WILDCARDS_PER_PATTERN)
    {
        return Err(PolicyError::TooManyWildcards {
            priority,
            pattern: pattern.clone(),
            count: pattern.matches('*').count(),
        });
    }
    Ok(TagSelection::Tagged(TagFilter::Patterns(entries.clone())))
}

fn count(priority: u32, selection: &RawSelection) -> Result<Count, PolicyError> {
    let rule = RuleRef::Priority(priority);
    let count_type = selection
        .count_type
        .as_deref()
        .ok_or(PolicyError::MissingField {
            rule,
            field: "selection.countType",
        })?;
    let since_pushed = match count_type {
        "imageCountMoreThan" => false,
        "sinceImagePushed" => true,
        other => {
            return Err(PolicyError::InvalidCountType {
                priority,
                value: other.to_owned(),
            })
        }
    };
    let number = selection.count_number.ok_or(PolicyError::MissingField {
        rule,
        field: "selection.countNumber",
    })?;
    let number =
        u32::try_from(number)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or(PolicyError::InvalidCountNumber {
                priority,
                value: number,
            })?;
    match (since_pushed, selection.count_unit.as_deref()) {
        (false, None) => Ok(Count::ImageCountMoreThan(number)),
        (false, Some(_)) => Err(PolicyError::CountUnitForbidden { priority }),
        (true, None) => Err(PolicyError::CountUnitRequired { priority }),
        (true, Some("days")) => Ok(Count::SinceImagePushedDays(number)),
        (true, Some(other)) => Err(PolicyError::InvalidCountUnit {
            priority,
            value: other.to_owned(),
        }),
    }
}

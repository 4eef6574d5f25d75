use super::*;

const DAY: u64 = SECONDS_PER_DAY;
const NOW: u64 = 1_700_000_000;

/// A policy document around the given rule objects.
fn doc(rules: &[&str]) -> String {
    format!(r#"{{ "rules": [ {} ] }}"#, rules.join(", "))
}

/// A rule object with `action` expire.
fn rule(priority: u32, selection: &str) -> String {
    format!(
        r#"{{ "rulePriority": {priority}, "description": "rule {priority}", "selection": {{ {selection} }}, "action": {{ "type": "expire" }} }}"#
    )
}

fn parse(rules: &[&str]) -> Policy {
    let text = doc(rules);
    Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The error for a document around the given rules, padded to the minimum length.
fn parse_err(rules: &[&str]) -> PolicyError {
    parse_padded(&doc(rules)).expect_err("policy should be rejected")
}

/// Parses text padded with trailing spaces to the minimum length, so short
/// documents reach the checks after the length check.
fn parse_padded(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(&format!("{text:<width$}", width = MIN_POLICY_TEXT_CHARS))
}

fn img(digest: &str, tags: &[&str], pushed_at_unix: u64) -> Image {
    Image {
        digest: digest.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        pushed_at_unix,
    }
}

/// (digest, rule priority) pairs, in output order.
fn expired(policy: &Policy, images: &[Image]) -> Vec<(String, u32)> {
    policy
        .evaluate(images, NOW)
        .into_iter()
        .map(|e| (e.digest, e.rule_priority))
        .collect()
}

fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(d, p)| ((*d).to_owned(), *p)).collect()
}

const COUNT_1: &str = r#""countType": "imageCountMoreThan", "countNumber": 1"#;

// ---- parsing ----

// A full, valid policy parses into rules in ascending priority with their fields.
#[test]
fn parses_valid_policy_in_priority_order() {
    let policy = parse(&[
        &rule(
            10,
            r#""tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50"#,
        ),
        &rule(
            2,
            r#""tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14"#,
        ),
        &rule(
            5,
            r#""tagStatus": "tagged", "tagPatternList": ["prod*"], "countType": "imageCountMoreThan", "countNumber": 3"#,
        ),
        &rule(
            3,
            r#""tagStatus": "tagged", "tagPrefixList": ["v", "x"], "countType": "imageCountMoreThan", "countNumber": 1"#,
        ),
    ]);
    assert_eq!(
        policy.rules(),
        &[
            Rule {
                priority: 2,
                description: Some("rule 2".into()),
                tags: TagSelection::Untagged,
                count: Count::SinceImagePushedDays(14),
            },
            Rule {
                priority: 3,
                description: Some("rule 3".into()),
                tags: TagSelection::Tagged(TagFilter::Prefixes(vec!["v".into(), "x".into()])),
                count: Count::ImageCountMoreThan(1),
            },
            Rule {
                priority: 5,
                description: Some("rule 5".into()),
                tags: TagSelection::Tagged(TagFilter::Patterns(vec!["prod*".into()])),
                count: Count::ImageCountMoreThan(3),
            },
            Rule {
                priority: 10,
                description: Some("rule 10".into()),
                tags: TagSelection::Any,
                count: Count::ImageCountMoreThan(50),
            },
        ]
    );
}

// The description is optional.
#[test]
fn description_is_optional() {
    let text = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let policy = Policy::parse(text).unwrap();
    assert_eq!(policy.rules()[0].description, None);
}

// ---- validation: the document ----

// Text under ECR's 100-character minimum is rejected.
#[test]
fn rejects_too_short_text() {
    assert_eq!(
        Policy::parse(r#"{"rules":[]}"#),
        Err(PolicyError::TooShort { len: 12, min: 100 })
    );
}

// Text over ECR's 30720-character maximum is rejected.
#[test]
fn rejects_too_long_text() {
    let text = " ".repeat(MAX_POLICY_TEXT_CHARS + 1);
    assert_eq!(
        Policy::parse(&text),
        Err(PolicyError::TooLong {
            len: MAX_POLICY_TEXT_CHARS + 1,
            max: MAX_POLICY_TEXT_CHARS
        })
    );
}

// Text that is not JSON is rejected with the parser's position.
#[test]
fn rejects_invalid_json() {
    let err = parse_padded(r#"{"rules": [ "#).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Json { message } if message.contains("line 1")),
        "{err}"
    );
}

// A document that is not a JSON object is rejected.
#[test]
fn rejects_non_object_document() {
    assert_eq!(
        parse_padded("[]"),
        Err(PolicyError::Shape {
            message: "expected a JSON object, got an array".into()
        })
    );
}

// A document without "rules" is rejected.
#[test]
fn rejects_missing_rules() {
    assert_eq!(
        parse_padded("{}"),
        Err(PolicyError::Shape {
            message: "missing field `rules`".into()
        })
    );
}

// An unknown top-level field is rejected.
#[test]
fn rejects_unknown_top_level_field() {
    let err = parse_padded(r#"{"rules": [], "version": 1}"#).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Shape { message } if message.contains("unknown field `version`")),
        "{err}"
    );
}

// An empty rules array is rejected.
#[test]
fn rejects_empty_rules() {
    assert_eq!(parse_padded(r#"{"rules": []}"#), Err(PolicyError::NoRules));
}

// ---- validation: rulePriority ----

// A rule that is not an object is rejected, named by its index.
#[test]
fn rejects_non_object_rule() {
    assert_eq!(
        parse_err(&["42"]),
        PolicyError::Malformed {
            rule: RuleRef::Index(0),
            part: "rule",
            message: "expected a JSON object, got a number".into()
        }
    );
}

// A rule without rulePriority is rejected, named by its index.
#[test]
fn rejects_missing_rule_priority() {
    let ok = rule(1, &format!(r#""tagStatus": "untagged", {COUNT_1}"#));
    let missing = r#"{ "selection": { "tagStatus": "untagged" }, "action": { "type": "expire" } }"#;
    assert_eq!(
        parse_err(&[&ok, missing]),
        PolicyError::MissingField {
            rule: RuleRef::Index(1),
            field: "rulePriority"
        }
    );
}

// rulePriority must be a positive integer that fits in u32.
#[test]
fn rejects_invalid_rule_priority() {
    for bad in ["0", "-1", "1.5", "\"1\"", "4294967296"] {
        let text = format!(
            r#"{{ "rules": [ {{ "rulePriority": {bad}, "selection": {{ "tagStatus": "untagged", {COUNT_1} }}, "action": {{ "type": "expire" }} }} ] }}"#
        );
        assert_eq!(
            Policy::parse(&text),
            Err(PolicyError::InvalidRulePriority {
                index: 0,
                value: bad.into()
            }),
            "{bad}"
        );
    }
}

// Two rules with the same rulePriority are rejected.
#[test]
fn rejects_duplicate_rule_priority() {
    let a = rule(3, &format!(r#""tagStatus": "untagged", {COUNT_1}"#));
    let b = rule(
        3,
        &format!(r#""tagStatus": "tagged", "tagPrefixList": ["v"], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&a, &b]),
        PolicyError::DuplicateRulePriority { priority: 3 }
    );
}

// ---- validation: unknown fields and shapes ----

// Unknown fields in a rule, its selection or its action are rejected, naming the rule.
#[test]
fn rejects_unknown_fields() {
    let in_rule = r#"{ "rulePriority": 4, "enabled": true, "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1 }, "action": { "type": "expire" } }"#;
    let err = parse_err(&[in_rule]);
    assert!(
        matches!(&err, PolicyError::Malformed { rule: RuleRef::Priority(4), part: "rule", message } if message.contains("unknown field `enabled`")),
        "{err}"
    );

    let in_selection = rule(
        4,
        &format!(r#""tagStatus": "untagged", "tagSuffixList": ["x"], {COUNT_1}"#),
    );
    let err = parse_err(&[&in_selection]);
    assert!(
        matches!(&err, PolicyError::Malformed { rule: RuleRef::Priority(4), part: "selection", message } if message.contains("unknown field `tagSuffixList`")),
        "{err}"
    );

    let in_action = r#"{ "rulePriority": 4, "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1 }, "action": { "type": "expire", "dryRun": true } }"#;
    let err = parse_err(&[in_action]);
    assert!(
        matches!(&err, PolicyError::Malformed { rule: RuleRef::Priority(4), part: "action", message } if message.contains("unknown field `dryRun`")),
        "{err}"
    );
}

// A field of the wrong JSON type is rejected, naming the rule and part.
#[test]
fn rejects_wrong_field_type() {
    let r = rule(
        2,
        r#""tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": "5""#,
    );
    let err = parse_err(&[&r]);
    assert!(
        matches!(&err, PolicyError::Malformed { rule: RuleRef::Priority(2), part: "selection", message } if message.contains("invalid type")),
        "{err}"
    );
}

// A rule without selection or without action is rejected.
#[test]
fn rejects_missing_selection_and_action() {
    let no_selection = r#"{ "rulePriority": 1, "description": "no selection here", "action": { "type": "expire" } }"#;
    assert_eq!(
        parse_err(&[no_selection]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "selection"
        }
    );
    let no_action = r#"{ "rulePriority": 1, "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1 } }"#;
    assert_eq!(
        parse_err(&[no_action]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "action"
        }
    );
}

// ---- validation: action ----

// An action without a type is rejected.
#[test]
fn rejects_missing_action_type() {
    let r = r#"{ "rulePriority": 1, "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1 }, "action": {} }"#;
    assert_eq!(
        parse_err(&[r]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "action.type"
        }
    );
}

// An action type other than "expire" is rejected.
#[test]
fn rejects_non_expire_action() {
    let r = r#"{ "rulePriority": 7, "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1 }, "action": { "type": "archive" } }"#;
    assert_eq!(
        parse_err(&[r]),
        PolicyError::InvalidActionType {
            priority: 7,
            value: "archive".into()
        }
    );
}

// ---- validation: tagStatus and tag lists ----

// tagStatus is required.
#[test]
fn rejects_missing_tag_status() {
    assert_eq!(
        parse_err(&[&rule(1, COUNT_1)]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "selection.tagStatus"
        }
    );
}

// tagStatus must be tagged, untagged or any.
#[test]
fn rejects_unknown_tag_status() {
    assert_eq!(
        parse_err(&[&rule(1, &format!(r#""tagStatus": "Tagged", {COUNT_1}"#))]),
        PolicyError::InvalidTagStatus {
            priority: 1,
            value: "Tagged".into()
        }
    );
}

// tagStatus tagged needs tagPrefixList or tagPatternList.
#[test]
fn rejects_tagged_without_tag_list() {
    assert_eq!(
        parse_err(&[&rule(6, &format!(r#""tagStatus": "tagged", {COUNT_1}"#))]),
        PolicyError::TagListRequired { priority: 6 }
    );
}

// tagPrefixList and tagPatternList cannot be used together.
#[test]
fn rejects_both_tag_lists() {
    let r = rule(
        6,
        &format!(
            r#""tagStatus": "tagged", "tagPrefixList": ["v"], "tagPatternList": ["v*"], {COUNT_1}"#
        ),
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::TagListsExclusive { priority: 6 }
    );
}

// Tag lists are forbidden with tagStatus untagged and any.
#[test]
fn rejects_tag_list_without_tagged() {
    let r = rule(
        1,
        &format!(r#""tagStatus": "untagged", "tagPrefixList": ["v"], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::TagListForbidden {
            priority: 1,
            field: "tagPrefixList",
            tag_status: "untagged"
        }
    );
    let r = rule(
        1,
        &format!(r#""tagStatus": "any", "tagPatternList": ["v*"], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::TagListForbidden {
            priority: 1,
            field: "tagPatternList",
            tag_status: "any"
        }
    );
}

// An empty tag list is rejected.
#[test]
fn rejects_empty_tag_list() {
    let r = rule(
        2,
        &format!(r#""tagStatus": "tagged", "tagPatternList": [], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::EmptyTagList {
            priority: 2,
            field: "tagPatternList"
        }
    );
}

// An empty string inside a tag list is rejected.
#[test]
fn rejects_empty_tag_entry() {
    let r = rule(
        2,
        &format!(r#""tagStatus": "tagged", "tagPrefixList": ["v", ""], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::EmptyTagEntry {
            priority: 2,
            field: "tagPrefixList"
        }
    );
}

// A pattern with five wildcards is rejected; four are accepted.
#[test]
fn limits_wildcards_per_pattern() {
    let five = rule(
        2,
        &format!(r#""tagStatus": "tagged", "tagPatternList": ["a*", "*b*c*d*e*"], {COUNT_1}"#),
    );
    assert_eq!(
        parse_err(&[&five]),
        PolicyError::TooManyWildcards {
            priority: 2,
            pattern: "*b*c*d*e*".into(),
            count: 5
        }
    );
    let four = rule(
        2,
        &format!(r#""tagStatus": "tagged", "tagPatternList": ["*b*c*d*e"], {COUNT_1}"#),
    );
    parse(&[&four]);
}

// ---- validation: countType, countNumber, countUnit ----

// countType is required and must be one of the two known values.
#[test]
fn rejects_missing_or_unknown_count_type() {
    assert_eq!(
        parse_err(&[&rule(1, r#""tagStatus": "untagged", "countNumber": 1"#)]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "selection.countType"
        }
    );
    assert_eq!(
        parse_err(&[&rule(
            1,
            r#""tagStatus": "untagged", "countType": "imageCountLessThan", "countNumber": 1"#
        )]),
        PolicyError::InvalidCountType {
            priority: 1,
            value: "imageCountLessThan".into()
        }
    );
}

// countNumber is required and must be from 1 to u32::MAX.
#[test]
fn rejects_missing_or_out_of_range_count_number() {
    assert_eq!(
        parse_err(&[&rule(
            1,
            r#""tagStatus": "untagged", "countType": "imageCountMoreThan""#
        )]),
        PolicyError::MissingField {
            rule: RuleRef::Priority(1),
            field: "selection.countNumber"
        }
    );
    for value in [0, -3, i64::from(u32::MAX) + 1] {
        let r = rule(
            1,
            &format!(
                r#""tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": {value}"#
            ),
        );
        assert_eq!(
            parse_err(&[&r]),
            PolicyError::InvalidCountNumber { priority: 1, value },
            "{value}"
        );
    }
}

// sinceImagePushed requires countUnit.
#[test]
fn rejects_since_pushed_without_count_unit() {
    let r = rule(
        8,
        r#""tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7"#,
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::CountUnitRequired { priority: 8 }
    );
}

// imageCountMoreThan forbids countUnit.
#[test]
fn rejects_count_unit_with_image_count() {
    let r = rule(
        8,
        r#""tagStatus": "untagged", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 7"#,
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::CountUnitForbidden { priority: 8 }
    );
}

// countUnit must be "days".
#[test]
fn rejects_unknown_count_unit() {
    let r = rule(
        8,
        r#""tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "hours", "countNumber": 7"#,
    );
    assert_eq!(
        parse_err(&[&r]),
        PolicyError::InvalidCountUnit {
            priority: 8,
            value: "hours".into()
        }
    );
}

// ---- validation: tagStatus any is last ----

// A tagStatus any rule that is not the highest priority is rejected, even if written last.
#[test]
fn rejects_any_rule_not_last() {
    let any = rule(1, &format!(r#""tagStatus": "any", {COUNT_1}"#));
    let later = rule(2, &format!(r#""tagStatus": "untagged", {COUNT_1}"#));
    assert_eq!(
        parse_err(&[&later, &any]),
        PolicyError::AnyNotLast {
            priority: 1,
            highest: 2
        }
    );
}

// Two tagStatus any rules cannot both be last.
#[test]
fn rejects_two_any_rules() {
    let a = rule(1, &format!(r#""tagStatus": "any", {COUNT_1}"#));
    let b = rule(9, &format!(r#""tagStatus": "any", {COUNT_1}"#));
    assert_eq!(
        parse_err(&[&a, &b]),
        PolicyError::AnyNotLast {
            priority: 1,
            highest: 9
        }
    );
}

// Error messages name the rule priority and the field, for the user to act on.
#[test]
fn error_messages_name_rule_and_field() {
    assert_eq!(
        PolicyError::CountUnitRequired { priority: 8 }.to_string(),
        "rule with rulePriority 8: countUnit \"days\" is required when countType is \"sinceImagePushed\""
    );
    assert_eq!(
        PolicyError::MissingField {
            rule: RuleRef::Index(2),
            field: "rulePriority"
        }
        .to_string(),
        "rules[2]: rulePriority is required"
    );
    assert_eq!(
        PolicyError::TooManyWildcards {
            priority: 3,
            pattern: "*a*b*c*d*".into(),
            count: 5
        }
        .to_string(),
        "rule with rulePriority 3: tagPatternList entry \"*a*b*c*d*\" has 5 wildcards; at most 4 are allowed"
    );
}

// ---- evaluation: counts and ages ----

// imageCountMoreThan keeps the newest N selected images and expires the rest, newest first.
#[test]
fn count_keeps_newest_n() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2"#,
    )]);
    let images = [
        img("sha256:a", &["v1"], 100),
        img("sha256:d", &[], 400),
        img("sha256:b", &["v2"], 200),
        img("sha256:c", &["v3"], 300),
    ];
    assert_eq!(
        policy.evaluate(&images, NOW),
        vec![
            Expiration {
                digest: "sha256:b".into(),
                tags: vec!["v2".into()],
                pushed_at_unix: 200,
                rule_priority: 1
            },
            Expiration {
                digest: "sha256:a".into(),
                tags: vec!["v1".into()],
                pushed_at_unix: 100,
                rule_priority: 1
            },
        ]
    );
}

// imageCountMoreThan expires nothing when there are N or fewer selected images.
#[test]
fn count_within_limit_expires_nothing() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2"#,
    )]);
    let images = [img("sha256:a", &[], 1), img("sha256:b", &[], 2)];
    assert!(policy.evaluate(&images, NOW).is_empty());
    assert!(policy.evaluate(&[], NOW).is_empty());
}

// sinceImagePushed expires images pushed more than N days before now: exactly N days is kept,
// and an image pushed "after now" (clock skew) is kept.
#[test]
fn age_expires_older_than_n_days() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7"#,
    )]);
    let images = [
        img("sha256:old", &["v1"], NOW - 7 * DAY - 1),
        img("sha256:edge", &["v2"], NOW - 7 * DAY),
        img("sha256:new", &[], NOW - DAY),
        img("sha256:future", &[], NOW + DAY),
        img("sha256:ancient", &[], 0),
    ];
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:old", 1), ("sha256:ancient", 1)])
    );
}

// ---- evaluation: tag matching ----

// tagPrefixList selects tagged images with a tag starting with the prefix.
#[test]
fn prefix_matching() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 1"#,
    )]);
    let images = [
        img("sha256:a", &["prod-1"], 1),
        img("sha256:b", &["dev", "production"], 2),
        img("sha256:c", &["prod"], 3),
        img("sha256:d", &["dev-prod"], 0),
        img("sha256:e", &[], 0),
    ];
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:b", 1), ("sha256:a", 1)])
    );
}

// With several prefixes, only images with tags matching every prefix are selected.
#[test]
fn multiple_prefixes_must_all_match() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "tagged", "tagPrefixList": ["prod", "beta"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#,
    )]);
    let old = NOW - 10 * DAY;
    let images = [
        img("sha256:both", &["prod1", "beta1"], old),
        img("sha256:prod-only", &["prod1"], old),
        img("sha256:beta-only", &["beta1", "other"], old),
        // One tag cannot satisfy both prefixes.
        img("sha256:one-tag", &["prodbeta"], old),
    ];
    assert_eq!(expired(&policy, &images), pairs(&[("sha256:both", 1)]));
}

// tagPatternList matches whole tags, with `*` matching any run of characters.
#[test]
fn pattern_matching() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "tagged", "tagPatternList": ["prod*release"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#,
    )]);
    let old = NOW - 10 * DAY;
    let images = [
        img("sha256:a", &["prod-9-release"], old),
        img("sha256:b", &["prodrelease"], old),
        img("sha256:c", &["prod-9-release-2"], old),
        img("sha256:d", &["xprod-release"], old),
        img("sha256:e", &["dev", "prod_release"], old),
    ];
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:a", 1), ("sha256:b", 1), ("sha256:e", 1)])
    );
}

// With several patterns, only images with tags matching every pattern are selected.
#[test]
fn multiple_patterns_must_all_match() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "tagged", "tagPatternList": ["v*", "*-stable"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#,
    )]);
    let old = NOW - 10 * DAY;
    let images = [
        img("sha256:a", &["v1", "x-stable"], old),
        img("sha256:b", &["v1"], old),
        img("sha256:c", &["v2-stable"], old),
        img("sha256:d", &["x-stable"], old),
    ];
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:a", 1), ("sha256:c", 1)])
    );
}

// The wildcard matcher handles leading, trailing, repeated and adjacent stars and backtracking.
#[test]
fn wildcard_matcher_edge_cases() {
    let cases = [
        ("*", "", true),
        ("*", "anything", true),
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("a*", "a", true),
        ("*c", "abc", true),
        ("*c", "abcd", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "abcbc", true),
        ("a*b*c", "acb", false),
        ("a**c", "ac", true),
        ("*ab", "aab", true),
        ("*aab", "aaab", true),
        ("*-*-*", "1-2-3", true),
        ("*-*-*", "1-2", false),
        ("v1.*", "v1.0", true),
        ("v1.*", "v10", false),
        ("é*", "éa", true),
        ("", "", true),
        ("", "a", false),
    ];
    for (pattern, text, want) in cases {
        assert_eq!(
            wildcard_match(pattern, text),
            want,
            "{pattern:?} vs {text:?}"
        );
    }
}

// ---- evaluation: tag status ----

// An untagged rule never touches tagged images; a tagged rule never touches untagged ones;
// an any rule takes both.
#[test]
fn untagged_tagged_and_any() {
    let old = NOW - 30 * DAY;
    let images = [img("sha256:t", &["v1"], old), img("sha256:u", &[], old)];
    let age = |status: &str| {
        parse(&[&rule(
            1,
            &format!(
                r#""tagStatus": "{status}", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#
            ),
        )])
    };
    assert_eq!(
        expired(&age("untagged"), &images),
        pairs(&[("sha256:u", 1)])
    );
    assert_eq!(
        expired(&age("any"), &images),
        pairs(&[("sha256:t", 1), ("sha256:u", 1)])
    );
    let tagged = parse(&[&rule(
        1,
        r#""tagStatus": "tagged", "tagPatternList": ["*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#,
    )]);
    assert_eq!(expired(&tagged, &images), pairs(&[("sha256:t", 1)]));
}

// ---- evaluation: precedence ----

// An image selected (and kept) by priority 1 is not expired by priority 2.
#[test]
fn image_selected_by_earlier_rule_is_not_reconsidered() {
    let policy = parse(&[
        &rule(
            2,
            r#""tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1"#,
        ),
        &rule(
            1,
            r#""tagStatus": "tagged", "tagPrefixList": ["release"], "countType": "imageCountMoreThan", "countNumber": 5"#,
        ),
    ]);
    let old = NOW - 100 * DAY;
    let images = [
        img("sha256:rel", &["release-1"], old),
        img("sha256:dev", &["dev-1"], old),
        img("sha256:none", &[], old),
    ];
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:dev", 2), ("sha256:none", 2)])
    );
}

// Rules run in priority order, not document order; an image expired by one rule is reported
// once, and images left over flow to later rules, whose counts exclude earlier rules' images.
#[test]
fn rules_run_in_priority_order_and_expire_once() {
    let policy = parse(&[
        &rule(
            20,
            r#""tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1"#,
        ),
        &rule(
            10,
            r#""tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1"#,
        ),
    ]);
    let images = [
        img("sha256:u1", &[], 1),
        img("sha256:u2", &[], 2),
        img("sha256:t1", &["a"], 3),
        img("sha256:t2", &["b"], 4),
    ];
    // Priority 10 keeps u2 and expires u1; priority 20 sees only t1 and t2 and keeps t2.
    assert_eq!(
        expired(&policy, &images),
        pairs(&[("sha256:u1", 10), ("sha256:t1", 20)])
    );
}

// ---- evaluation: determinism ----

// Images pushed at the same second are ordered by digest: the smallest digest counts as newest.
#[test]
fn ties_are_broken_by_digest() {
    let policy = parse(&[&rule(
        1,
        r#""tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1"#,
    )]);
    let forward = [
        img("sha256:b", &[], 5),
        img("sha256:a", &[], 5),
        img("sha256:c", &[], 5),
    ];
    let mut backward = forward.clone();
    backward.reverse();
    let want = pairs(&[("sha256:b", 1), ("sha256:c", 1)]);
    assert_eq!(expired(&policy, &forward), want);
    assert_eq!(expired(&policy, &backward), want);
}

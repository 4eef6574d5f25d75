use super::*;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::json;

/// The brief's CreateRule body: lists by member.N, nesting by dots, escapes decoded.
#[test]
fn parses_create_rule() {
    let body = b"Action=CreateRule&Version=2015-12-01&ListenerArn=arn%3Ax&Priority=10&Conditions.member.1.Field=path-pattern&Conditions.member.1.PathPatternConfig.Values.member.1=%2Fusers*&Actions.member.1.Type=forward&Actions.member.1.TargetGroupArn=tg";
    let r = parse(body).unwrap();
    assert_eq!(r.action, "CreateRule");
    assert_eq!(
        r.params,
        json!({
            "ListenerArn": "arn:x",
            "Priority": "10",
            "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/users*"]}}],
            "Actions": [{"Type": "forward", "TargetGroupArn": "tg"}],
        })
    );
}

/// Members are ordered by N, not by their place in the body (10 after 9).
#[test]
fn orders_members_numerically() {
    let mut body = String::from("Action=X");
    for i in (1..=10).rev() {
        body.push_str(&format!("&L.member.{i}=v{i}"));
    }
    let r = parse(body.as_bytes()).unwrap();
    let want: Vec<String> = (1..=10).map(|i| format!("v{i}")).collect();
    assert_eq!(r.params["L"], json!(want));
}

/// Gaps, duplicates, conflicts, bad indexes, a missing Action and a wrong Version are refused.
#[test]
fn refuses_malformed() {
    let cases: &[(&str, QueryError)] = &[
        (
            "Action=X&L.member.1=a&L.member.3=c",
            QueryError::Gap("L.member".into(), 2),
        ),
        ("Action=X&A=1&A=2", QueryError::Duplicate("A".into())),
        ("Action=X&A=1&A.B=2", QueryError::Conflict("A.B".into())),
        ("Action=X&A.B=2&A=1", QueryError::Conflict("A".into())),
        (
            "Action=X&L.member.0=a",
            QueryError::BadKey(
                "L.member.0".into(),
                "list and map items are numbered 1, 2, …",
            ),
        ),
        (
            "Action=X&L.member.01=a",
            QueryError::BadKey(
                "L.member.01".into(),
                "list and map items are numbered 1, 2, …",
            ),
        ),
        (
            "Action=X&A..B=1",
            QueryError::BadKey("A..B".into(), "empty name part"),
        ),
        ("Version=2015-12-01", QueryError::MissingAction),
        (
            "Action=X&Version=2012-06-01",
            QueryError::BadVersion("2012-06-01".into()),
        ),
        ("Action=X&Action=Y", QueryError::Duplicate("Action".into())),
    ];
    for (body, want) in cases {
        assert_eq!(parse(body.as_bytes()).unwrap_err(), *want, "{body}");
    }
}

/// Maps come from entry.N.key/value.
#[test]
fn parses_maps() {
    let r = parse(b"Action=X&M.entry.1.key=a&M.entry.1.value=1&M.entry.2.key=b&M.entry.2.value=2")
        .unwrap();
    assert_eq!(r.params["M"], json!({"a": "1", "b": "2"}));
    assert!(parse(b"Action=X&M.entry.1.key=a&M.entry.2.key=a").is_err());
}

/// Limits: body size, parameter count, key length, depth.
#[test]
fn limits() {
    assert_eq!(
        parse(&vec![b'a'; MAX_BODY + 1]).unwrap_err(),
        QueryError::TooLarge
    );
    let many: String = (0..=MAX_PARAMS).map(|i| format!("K{i}=v&")).collect();
    assert_eq!(
        parse(many.as_bytes()).unwrap_err(),
        QueryError::TooManyParams
    );
    let long = format!("Action=X&{}=1", "k".repeat(MAX_KEY_LEN + 1));
    assert!(matches!(
        parse(long.as_bytes()),
        Err(QueryError::BadKey(_, "too long"))
    ));
    let deep = format!("Action=X&{}=1", vec!["a"; MAX_DEPTH + 1].join("."));
    assert!(matches!(
        parse(deep.as_bytes()),
        Err(QueryError::BadKey(_, "nested too deeply"))
    ));
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Typed {
    port: Option<i64>,
    enabled: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
    name: String,
}

/// Numbers and booleans are read out of strings; an empty list value is an empty list;
/// unknown members and non-numbers are refused.
#[test]
fn typed_inputs() {
    let r = parse(b"Action=X&Port=80&Enabled=true&Tags=&Name=n").unwrap();
    let t: Typed = from_tree(r.params).unwrap();
    assert_eq!(
        t,
        Typed {
            port: Some(80),
            enabled: Some(true),
            tags: vec![],
            name: "n".into()
        }
    );
    let bad = |b: &str| from_tree::<Typed>(parse(b.as_bytes()).unwrap().params).unwrap_err();
    assert!(bad("Action=X&Port=eighty&Name=n").contains("not a valid number"));
    assert!(bad("Action=X&Enabled=yes&Name=n").contains("not a boolean"));
    assert!(bad("Action=X&Name=n&Bogus=1").contains("unknown field"));
    assert!(bad("Action=X").contains("missing field"));
    assert!(bad("Action=X&Name.member.1=n").contains("expected a value"));
}

proptest! {
    /// No body makes the parser panic.
    #[test]
    fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&body);
    }

    /// Bodies shaped like Query requests never panic, through to typed inputs.
    #[test]
    fn query_shaped_never_panics(
        pairs in proptest::collection::vec(
            ("(Name|Port|Enabled|Tags|member|entry|key|value|[0-9]{1,2})(\\.(Name|member|entry|key|value|[0-9]{1,2})){0,4}", "[a-z0-9%=&.]{0,6}"),
            0..12,
        )
    ) {
        let body: String = std::iter::once("Action=X".to_string())
            .chain(pairs.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join("&");
        if let Ok(r) = parse(body.as_bytes()) {
            let _ = from_tree::<Typed>(r.params.clone());
            let _ = from_tree::<serde_json::Value>(r.params);
        }
    }

    /// A list of N members comes back as those N values in order.
    #[test]
    fn lists_round_trip(values in proptest::collection::vec("[a-zA-Z0-9 /*?]{0,8}", 1..20)) {
        let mut body = String::from("Action=X");
        for (i, v) in values.iter().enumerate() {
            let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            body.push_str(&format!("&L.member.{}={enc}", i + 1));
        }
        let r = parse(body.as_bytes()).unwrap();
        prop_assert_eq!(&r.params["L"], &json!(values));
    }
}

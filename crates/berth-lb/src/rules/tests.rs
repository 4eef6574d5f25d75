use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::config::{Action, Condition, Rule, WeightedTargetGroup};

fn req<'a>(headers: &'a [(&'a str, &'a str)]) -> RequestView<'a> {
    RequestView {
        method: "GET",
        path: "/users/42",
        query: "a=1&Color=Blue&flag",
        host: "Api.Example.com:8080",
        headers,
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    }
}

fn rule(arn: &str, conditions: Vec<Condition>) -> Rule {
    Rule {
        arn: arn.into(),
        priority: Some(1),
        conditions,
        action: Action::FixedResponse {
            status: 200,
            content_type: None,
            body: String::new(),
        },
    }
}

fn holds(c: Condition) -> bool {
    condition_holds(&c, &req(&[("X-Env", "Canary"), ("x-env", "beta")]))
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `*` matches any run, `?` exactly one character, everything else itself.
#[test]
fn wildcards() {
    let s = Case::Sensitive;
    assert!(wildcard_match("/users/*", "/users/42", s));
    assert!(wildcard_match("/users/*", "/users/", s));
    assert!(!wildcard_match("/users/*", "/users", s));
    assert!(wildcard_match("*", "", s));
    assert!(wildcard_match("", "", s));
    assert!(!wildcard_match("", "a", s));
    assert!(wildcard_match("/a?c", "/abc", s));
    assert!(!wildcard_match("/a?c", "/ac", s));
    assert!(wildcard_match("*.jpg", "/img/x.jpg", s));
    assert!(!wildcard_match("*.jpg", "/img/x.jpgx", s));
    assert!(wildcard_match("/a*b*c", "/aXbYbZc", s));
    assert!(!wildcard_match("/a*b*c", "/aXbYbZ", s));
    assert!(wildcard_match("**", "abc", s));
    assert!(!wildcard_match("/Users", "/users", s));
    assert!(wildcard_match("/Users", "/users", Case::Insensitive));
    assert!(wildcard_match("/ünï?", "/ünïx", s));
}

/// `\*` and `\?` are literal in query-string patterns.
#[test]
fn escaped_wildcards() {
    let i = Case::Insensitive;
    assert!(escaped_wildcard_match(r"a\*", "a*", i));
    assert!(!escaped_wildcard_match(r"a\*", "ab", i));
    assert!(escaped_wildcard_match(r"a\?", "a?", i));
    assert!(!escaped_wildcard_match(r"a\?", "ab", i));
    assert!(escaped_wildcard_match(r"a\\", r"a\", i));
    assert!(escaped_wildcard_match("a*", "AB", i));
}

/// The path is matched without the query string, case-sensitively.
#[test]
fn path_pattern() {
    assert!(holds(Condition::PathPattern(v(&["/users/*"]))));
    assert!(holds(Condition::PathPattern(v(&["/topics*", "/users*"]))));
    assert!(!holds(Condition::PathPattern(v(&["/Users/*"]))));
    assert!(!holds(Condition::PathPattern(v(&["/users/42?a=1"]))));
    assert!(!holds(Condition::PathPattern(v(&["/users"]))));
}

/// The host is matched without its port, case-insensitively.
#[test]
fn host_header() {
    assert!(holds(Condition::HostHeader(v(&["api.example.com"]))));
    assert!(holds(Condition::HostHeader(v(&["*.EXAMPLE.com"]))));
    assert!(!holds(Condition::HostHeader(v(&["api.example.com:8080"]))));
    assert!(!holds(Condition::HostHeader(v(&["www.example.com"]))));
    assert_eq!(host_without_port("a.b:80"), "a.b");
    assert_eq!(host_without_port("a.b"), "a.b");
    assert_eq!(host_without_port("[::1]:80"), "[::1]");
    assert_eq!(host_without_port("[::1]"), "[::1]");
    assert_eq!(host_without_port("a.b:x"), "a.b:x");
}

/// Methods are compared exactly (ELB: case-sensitive, no wildcards).
#[test]
fn http_method() {
    assert!(holds(Condition::HttpMethod(v(&["POST", "GET"]))));
    assert!(!holds(Condition::HttpMethod(v(&["get"]))));
    assert!(!holds(Condition::HttpMethod(v(&["G*"]))));
}

/// Any value of the named header (any case of the name) matching any pattern.
#[test]
fn http_header() {
    let c = |name: &str, vals: &[&str]| Condition::HttpHeader {
        name: name.into(),
        values: v(vals),
    };
    assert!(holds(c("x-env", &["canary"])));
    assert!(holds(c("X-ENV", &["BETA"])));
    assert!(holds(c("x-env", &["ca*"])));
    assert!(!holds(c("x-env", &["prod"])));
    assert!(!holds(c("x-other", &["*"])));
}

/// Key/value pairs or values alone, case-insensitive, wildcards allowed.
#[test]
fn query_string() {
    let q = |pairs: &[(Option<&str>, &str)]| {
        Condition::QueryString(
            pairs
                .iter()
                .map(|(k, v)| (k.map(str::to_string), v.to_string()))
                .collect(),
        )
    };
    assert!(holds(q(&[(Some("color"), "blue")])));
    assert!(holds(q(&[(None, "BLUE")])));
    assert!(holds(q(&[(Some("a"), "?")])));
    assert!(holds(q(&[(Some("flag"), "")])));
    assert!(holds(q(&[(Some("x"), "y"), (Some("a"), "1")])));
    assert!(!holds(q(&[(Some("color"), "red")])));
    assert!(!holds(q(&[(Some("b"), "*")])));
    assert_eq!(
        query_pairs("a=1&&b&c=x=y").collect::<Vec<_>>(),
        vec![("a", "1"), ("b", ""), ("c", "x=y")]
    );
}

/// Source addresses against IPv4 and IPv6 CIDRs; v4-mapped v6 clients count as v4.
#[test]
fn source_ip() {
    assert!(holds(Condition::SourceIp(v(&["10.0.0.0/8"]))));
    assert!(holds(Condition::SourceIp(v(&[
        "192.0.2.0/24",
        "10.1.2.3/32"
    ]))));
    assert!(!holds(Condition::SourceIp(v(&["10.1.2.0/31"]))));
    assert!(!holds(Condition::SourceIp(v(&["not-a-cidr"]))));
    let c = Cidr::parse("10.1.2.0/23").unwrap();
    assert!(c.contains("10.1.3.255".parse().unwrap()));
    assert!(!c.contains("10.1.4.0".parse().unwrap()));
    assert!(c.contains("::ffff:10.1.2.9".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    let v6 = Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert_eq!(Cidr::parse("10.0.0.0/33"), None);
    assert_eq!(Cidr::parse("10.0.0.1"), Cidr::parse("10.0.0.1/32"));
}

/// Rules are tried in order; all conditions must hold; no conditions always holds.
#[test]
fn first_matching_rule_wins() {
    let rules = vec![
        rule(
            "both",
            vec![
                Condition::PathPattern(v(&["/users/*"])),
                Condition::HttpMethod(v(&["POST"])),
            ],
        ),
        rule("path", vec![Condition::PathPattern(v(&["/users/*"]))]),
        rule("default", vec![]),
    ];
    let headers = [];
    assert_eq!(match_rule(&rules, &req(&headers)).unwrap().arn, "path");
    let post = RequestView {
        method: "POST",
        ..req(&headers)
    };
    assert_eq!(match_rule(&rules, &post).unwrap().arn, "both");
    let other = RequestView {
        path: "/x",
        ..req(&headers)
    };
    assert_eq!(match_rule(&rules, &other).unwrap().arn, "default");
    assert!(match_rule(&rules[..2], &other).is_none());
}

fn groups(weights: &[u32]) -> Vec<WeightedTargetGroup> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| WeightedTargetGroup {
            arn: format!("tg{i}"),
            weight: *w,
        })
        .collect()
}

/// Each group owns a slice of the random range as wide as its weight.
#[test]
fn weighted_choice() {
    let g = groups(&[1, 0, 3]);
    assert_eq!(choose_weighted(&g, 0), Some("tg0"));
    assert_eq!(choose_weighted(&g, 1), Some("tg2"));
    assert_eq!(choose_weighted(&g, 3), Some("tg2"));
    assert_eq!(choose_weighted(&g, 4), Some("tg0"));
    assert_eq!(choose_weighted(&groups(&[0, 0]), 7), None);
    assert_eq!(choose_weighted(&[], 7), None);
}

fn redirect(protocol: &str, host: &str, port: &str, path: &str, query: &str) -> Action {
    Action::Redirect {
        protocol: protocol.into(),
        host: host.into(),
        port: port.into(),
        path: path.into(),
        query: query.into(),
        status: 301,
    }
}

const INPUT: RedirectInput<'static> = RedirectInput {
    protocol: "http",
    host: "a.example",
    port: 8080,
    path: "/x/y",
    query: "q=1",
};

/// ELB's defaults keep the URL; each reserved key is substituted.
#[test]
fn redirect_urls() {
    let keep = redirect("#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}");
    assert_eq!(
        redirect_location(&keep, &INPUT).unwrap(),
        "http://a.example:8080/x/y?q=1"
    );
    let https = redirect("HTTPS", "#{host}", "443", "/#{path}", "#{query}");
    assert_eq!(
        redirect_location(&https, &INPUT).unwrap(),
        "https://a.example/x/y?q=1"
    );
    let moved = redirect(
        "#{protocol}",
        "b.example",
        "#{port}",
        "/new/#{path}",
        "from=#{host}&#{query}",
    );
    assert_eq!(
        redirect_location(&moved, &INPUT).unwrap(),
        "http://b.example:8080/new/x/y?from=a.example&q=1"
    );
    let no_query = RedirectInput { query: "", ..INPUT };
    assert_eq!(
        redirect_location(&keep, &no_query).unwrap(),
        "http://a.example:8080/x/y"
    );
    let default_port = RedirectInput { port: 80, ..INPUT };
    assert_eq!(
        redirect_location(&keep, &default_port).unwrap(),
        "http://a.example/x/y?q=1"
    );
    let fixed = Action::FixedResponse {
        status: 200,
        content_type: None,
        body: String::new(),
    };
    assert_eq!(redirect_location(&fixed, &INPUT), None);
}

/// A reference matcher: plain recursion, obviously right, exponential.
fn reference(p: &[char], t: &[char]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
        (Some(_), None) => false,
        (Some('?'), Some(_)) => reference(&p[1..], &t[1..]),
        (Some(a), Some(b)) => a == b && reference(&p[1..], &t[1..]),
    }
}

proptest! {
    /// The backtracking matcher agrees with the obvious recursive one.
    #[test]
    fn matcher_agrees_with_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
        let pc: Vec<char> = p.chars().collect();
        let tc: Vec<char> = t.chars().collect();
        prop_assert_eq!(wildcard_match(&p, &t, Case::Sensitive), reference(&pc, &tc));
    }

    /// A pattern without wildcards matches only itself; any text matches `*`.
    #[test]
    fn literals_and_star(t in "[ -~]{0,20}") {
        let lit: String = t.chars().filter(|c| *c != '*' && *c != '?').collect();
        prop_assert!(wildcard_match(&lit, &lit, Case::Sensitive));
        prop_assert!(wildcard_match("*", &t, Case::Sensitive));
        let upper = lit.to_ascii_uppercase();
        prop_assert!(wildcard_match(&upper, &lit, Case::Insensitive));
    }

    /// Weighted choice: never a weight-0 group, and over the whole random range each
    /// group is chosen exactly its weight's number of times.
    #[test]
    fn weighted_choice_is_proportional(weights in proptest::collection::vec(0u32..20, 1..6)) {
        let g = groups(&weights);
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut counts = vec![0u32; weights.len()];
        for r in 0..total {
            let arn = choose_weighted(&g, r).unwrap();
            let i: usize = arn[2..].parse().unwrap();
            counts[i] += 1;
        }
        prop_assert_eq!(counts, weights);
    }

    /// CIDR membership is the same as comparing the masked integers.
    #[test]
    fn cidr_is_mask_compare(net in any::<u32>(), ip in any::<u32>(), prefix in 0u8..=32) {
        let cidr = Cidr::parse(&format!("{}/{prefix}", Ipv4Addr::from(net))).unwrap();
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        prop_assert_eq!(cidr.contains(IpAddr::V4(Ipv4Addr::from(ip))), net & mask == ip & mask);
    }

    /// Host without port never panics and never keeps a `:digits` suffix.
    #[test]
    fn host_port_stripping(h in "[a-z.]{1,10}", port in any::<u16>()) {
        let with_port = format!("{h}:{port}");
        prop_assert_eq!(host_without_port(&with_port), h.as_str());
    }
}

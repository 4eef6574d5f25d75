//! Listener rules, pure: which rule a request matches, which target group a forward
//! action picks, and where a redirect action sends the client.
//!
//! The matching follows ELB's rule condition types
//! (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/rule-condition-types.html>
//! and the API reference's `*ConditionConfig` shapes):
//!
//! | condition | compared with | case |
//! |---|---|---|
//! | `host-header` | the Host header (or HTTP/2 `:authority`) without its port | insensitive |
//! | `path-pattern` | the path, without the query string | sensitive |
//! | `http-request-method` | the method, exactly (no wildcards) | sensitive |
//! | `http-header` | every value of the named header (name case-insensitive) | insensitive |
//! | `query-string` | each `key=value` pair of the query string | insensitive; `\*`, `\?` are literal |
//! | `source-ip` | the client address against CIDRs | — |
//!
//! `*` matches any run of characters (also none), `?` exactly one. All conditions of a
//! rule must hold; within a condition any one value is enough.

use std::net::IpAddr;

use crate::config::{Action, Condition, Rule, WeightedTargetGroup};

/// What the rules look at in a request (borrowed; no allocation per request).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path without the query string (`/a/b`).
    pub path: &'a str,
    /// The query string without the `?` (`a=1&b=2`), empty if none.
    pub query: &'a str,
    /// The Host header or `:authority`, port included if the client sent one.
    pub host: &'a str,
    /// All request headers, name and value.
    pub headers: &'a [(&'a str, &'a str)],
    pub client_ip: IpAddr,
}

/// The first rule (in the listener's evaluation order) whose conditions all hold.
pub fn match_rule<'r>(rules: &'r [Rule], req: &RequestView<'_>) -> Option<&'r Rule> {
    rules
        .iter()
        .find(|rule| rule.conditions.iter().all(|c| condition_holds(c, req)))
}

/// Whether any rule has an `http-header` condition (else the request's fields
/// need not be gathered for matching).
pub fn uses_headers(rules: &[Rule]) -> bool {
    rules
        .iter()
        .flat_map(|r| &r.conditions)
        .any(|c| matches!(c, Condition::HttpHeader { .. }))
}

/// Whether one condition holds for the request.
pub fn condition_holds(condition: &Condition, req: &RequestView<'_>) -> bool {
    match condition {
        Condition::PathPattern(patterns) => patterns
            .iter()
            .any(|p| wildcard_match(p, req.path, Case::Sensitive)),
        Condition::HostHeader(patterns) => {
            let host = host_without_port(req.host);
            patterns
                .iter()
                .any(|p| wildcard_match(p, host, Case::Insensitive))
        }
        Condition::HttpMethod(methods) => methods.iter().any(|m| m == req.method),
        Condition::HttpHeader { name, values } => req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| {
                values
                    .iter()
                    .any(|p| wildcard_match(p, v, Case::Insensitive))
            }),
        Condition::QueryString(pairs) => query_pairs(req.query).any(|(k, v)| {
            pairs.iter().any(|(key, value)| {
                key.as_ref()
                    .is_none_or(|key| escaped_wildcard_match(key, k, Case::Insensitive))
                    && escaped_wildcard_match(value, v, Case::Insensitive)
            })
        }),
        Condition::SourceIp(cidrs) => cidrs
            .iter()
            .any(|c| Cidr::parse(c).is_some_and(|c| c.contains(req.client_ip))),
    }
}

/// The `key=value` pairs of a query string, as sent (no percent-decoding); a pair
/// without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The host part of a Host header: `[::1]:80` → `[::1]`, `a.example:8080` → `a.example`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether letters are compared with their case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Sensitive,
    Insensitive,
}

/// One pattern element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Any,
}

/// ELB's wildcard match: `*` any run (also empty), `?` one character.
pub fn wildcard_match(pattern: &str, text: &str, case: Case) -> bool {
    let toks: Vec<Tok> = pattern
        .chars()
        .map(|c| match c {
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        })
        .collect();
    match_toks(&toks, text, case)
}

/// As [`wildcard_match`], where `\*`, `\?` and `\\` stand for the literal character
/// (the query-string condition's escape).
pub fn escaped_wildcard_match(pattern: &str, text: &str, case: Case) -> bool {
    let mut toks = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '\\' => match chars.next() {
                Some(next) => Tok::Lit(next),
                None => Tok::Lit('\\'),
            },
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    match_toks(&toks, text, case)
}

/// Greedy match with one backtrack point (the last `*`): linear in practice,
/// O(pattern × text) at worst, never exponential.
fn match_toks(toks: &[Tok], text: &str, case: Case) -> bool {
    let text: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| match case {
        Case::Sensitive => a == b,
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
    };
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
            }
            Some(Tok::Lit(c)) if eq(*c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32
/// or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the network; an IPv4-mapped IPv6 client (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// The target group a forward action sends a request to: by weight, with `random`
/// any number (the caller's randomness, so this stays a function); `None` if every
/// weight is 0 (or there is no group).
pub fn choose_weighted(groups: &[WeightedTargetGroup], random: u64) -> Option<&str> {
    let total: u64 = groups.iter().map(|g| u64::from(g.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for g in groups {
        let w = u64::from(g.weight);
        if point < w {
            return Some(&g.arn);
        }
        point -= w;
    }
    None
}

/// What a redirect is built from: the request as the listener received it.
#[derive(Debug, Clone, Copy)]
pub struct RedirectInput<'a> {
    /// `http` or `https`: the listener's protocol.
    pub protocol: &'a str,
    /// The Host header without its port.
    pub host: &'a str,
    /// The listener's port.
    pub port: u16,
    /// The request path, starting with `/`.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: &'a str,
}

/// The `Location` of a redirect action. Each part may use ELB's reserved keys
/// `#{protocol}`, `#{host}`, `#{port}`, `#{path}` (the path without its leading `/`)
/// and `#{query}`; the protocol is lower-cased, the port left out when it is the
/// protocol's default, and `?` only added when the query is not empty.
pub fn redirect_location(action: &Action, req: &RedirectInput<'_>) -> Option<String> {
    let Action::Redirect {
        protocol,
        host,
        port,
        path,
        query,
        ..
    } = action
    else {
        return None;
    };
    let port_s = req.port.to_string();
    let path_s = req.path.strip_prefix('/').unwrap_or(req.path);
    let fill = |template: &str| {
        template
            .replace("#{protocol}", req.protocol)
            .replace("#{host}", req.host)
            .replace("#{port}", &port_s)
            .replace("#{path}", path_s)
            .replace("#{query}", req.query)
    };
    let scheme = fill(protocol).to_ascii_lowercase();
    let host = fill(host);
    let port = fill(port);
    let mut path = fill(path);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let query = fill(query);
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => "",
    };
    let mut url = format!("{scheme}://{host}");
    if !port.is_empty() && port != default_port {
        url.push(':');
        url.push_str(&port);
    }
    url.push_str(&path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    Some(url)
}

#[cfg(test)]
mod tests;

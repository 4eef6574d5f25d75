//! The AWS Query protocol for the CLI's ELBv2 calls: a form body out, an XML document
//! back, read into a JSON value (elements with children become objects, `<member>`
//! lists become arrays, text becomes strings) so callers index it like the JSON APIs.

use serde_json::{Map, Value};

/// Percent-encodes a form value (RFC 3986 unreserved characters kept).
pub fn form_encode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Reads an XML document into a value; `None` if it is not well formed enough.
pub fn xml_to_value(xml: &str) -> Option<Value> {
    let mut pos = 0;
    let b = xml.as_bytes();
    // Skip the prolog.
    while let Some(i) = xml[pos..].find('<') {
        pos += i;
        if b.get(pos + 1) == Some(&b'?') || b.get(pos + 1) == Some(&b'!') {
            pos += xml[pos..].find('>')? + 1;
        } else {
            break;
        }
    }
    let (_, v, _) = element(xml, pos, 0)?;
    Some(v)
}

/// Parses the element at `pos`: (name, value, position after it).
fn element(xml: &str, pos: usize, depth: usize) -> Option<(String, Value, usize)> {
    if depth > 64 || !xml[pos..].starts_with('<') {
        return None;
    }
    let close = pos + xml[pos..].find('>')?;
    let tag = &xml[pos + 1..close];
    let self_closing = tag.ends_with('/');
    let name = tag
        .trim_end_matches('/')
        .split_whitespace()
        .next()?
        .to_string();
    if self_closing {
        return Some((name, Value::String(String::new()), close + 1));
    }
    let mut at = close + 1;
    let mut children: Vec<(String, Value)> = vec![];
    let mut text = String::new();
    loop {
        let next = at + xml[at..].find('<')?;
        text.push_str(&xml[at..next]);
        if xml[next..].starts_with("</") {
            let end = next + xml[next..].find('>')?;
            at = end + 1;
            break;
        }
        let (n, v, after) = element(xml, next, depth + 1)?;
        children.push((n, v));
        at = after;
    }
    let value = if children.is_empty() {
        Value::String(unescape(text.trim()))
    } else if children.iter().all(|(n, _)| n == "member") {
        Value::Array(children.into_iter().map(|(_, v)| v).collect())
    } else {
        let mut m = Map::new();
        for (n, v) in children {
            m.insert(n, v);
        }
        Value::Object(m)
    };
    Some((name, value, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results, member lists and escapes read as the JSON APIs would give them.
    #[test]
    fn reads_elb_documents() {
        let x = r#"<?xml version="1.0"?><DescribeLoadBalancersResponse xmlns="x"><DescribeLoadBalancersResult><LoadBalancers><member><LoadBalancerName>a&amp;b</LoadBalancerName><DNSName>d</DNSName></member><member><LoadBalancerName>c</LoadBalancerName></member></LoadBalancers></DescribeLoadBalancersResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeLoadBalancersResponse>"#;
        let v = xml_to_value(x).unwrap();
        let lbs = &v["DescribeLoadBalancersResult"]["LoadBalancers"];
        assert_eq!(lbs[0]["LoadBalancerName"], "a&b");
        assert_eq!(lbs[1]["LoadBalancerName"], "c");
        let e = xml_to_value(
            "<ErrorResponse><Error><Code>C</Code><Message>m</Message></Error></ErrorResponse>",
        )
        .unwrap();
        assert_eq!(e["Error"]["Code"], "C");
        assert!(xml_to_value("<a><b></a>").is_none());
        assert_eq!(
            form_encode(&[("A".into(), "/x y*".into())]),
            "A=%2Fx%20y%2A"
        );
    }
}

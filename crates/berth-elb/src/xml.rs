//! The AWS Query protocol's response side: XML rendered from JSON values whose member
//! names are the model's (`LoadBalancerArn`, `DNSName`, …), so a shape is written
//! exactly once, as a JSON value, and this module only spells it in XML.
//!
//! - a success: `<{Op}Response xmlns=…><{Op}Result>…</{Op}Result><ResponseMetadata>
//!   <RequestId>…</RequestId></ResponseMetadata></{Op}Response>`;
//! - an error: `<ErrorResponse xmlns=…><Error><Type>Sender</Type><Code>…</Code>
//!   <Message>…</Message></Error><RequestId>…</RequestId></ErrorResponse>`;
//! - a list is a sequence of `<member>` elements (the model's default for `query`), a
//!   null member is left out, booleans are `true`/`false`. Pure.

use serde_json::Value;

/// The model's `xmlNamespace`.
pub const XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// Escapes text for an XML element or attribute.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            // XML 1.0 cannot carry other control characters, even escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Writes `value`'s content (not its own element).
fn content(value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => escape(s, out),
        Value::Array(items) => {
            for item in items {
                element("member", item, out);
            }
        }
        Value::Object(members) => {
            for (name, v) in members {
                element(name, v, out);
            }
        }
    }
}

fn element(name: &str, value: &Value, out: &mut String) {
    if value.is_null() {
        return;
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    content(value, out);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// A request id for a response: a random UUID (version 4 layout), as AWS's.
pub fn request_id() -> String {
    let mut raw = [0u8; 16];
    // Without randomness the id is all zeros: it only correlates logs, never guards.
    let _ = getrandom::getrandom(&mut raw);
    raw[6] = (raw[6] & 0x0f) | 0x40;
    raw[8] = (raw[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The response document of operation `op` whose result is `result` (an object).
pub fn response(op: &str, result: &Value, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    out.push_str(op);
    out.push_str("Response xmlns=\"");
    out.push_str(XMLNS);
    out.push_str("\"><");
    out.push_str(op);
    out.push_str("Result>");
    content(result, &mut out);
    out.push_str("</");
    out.push_str(op);
    out.push_str("Result><ResponseMetadata><RequestId>");
    escape(request_id, &mut out);
    out.push_str("</RequestId></ResponseMetadata></");
    out.push_str(op);
    out.push_str("Response>");
    out
}

/// The error document: `sender` for faults the caller can fix (`Type` Sender), else
/// Receiver.
pub fn error(code: &str, message: &str, sender: bool, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"");
    out.push_str(XMLNS);
    out.push_str("\"><Error><Type>");
    out.push_str(if sender { "Sender" } else { "Receiver" });
    out.push_str("</Type><Code>");
    escape(code, &mut out);
    out.push_str("</Code><Message>");
    escape(message, &mut out);
    out.push_str("</Message></Error><RequestId>");
    escape(request_id, &mut out);
    out.push_str("</RequestId></ErrorResponse>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Objects become elements, lists `<member>`s, nulls vanish, text is escaped.
    #[test]
    fn renders_shapes() {
        let v = json!({
            "LoadBalancers": [{"LoadBalancerName": "a<b>&'\"", "State": {"Code": "active"},
                               "SecurityGroups": [], "VpcId": null}],
            "NextMarker": null,
        });
        let x = response("DescribeLoadBalancers", &v, "rid");
        assert!(x.contains("<DescribeLoadBalancersResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeLoadBalancersResult><LoadBalancers><member>"));
        assert!(x.contains("<LoadBalancerName>a&lt;b&gt;&amp;&apos;&quot;</LoadBalancerName>"));
        assert!(x.contains("<SecurityGroups></SecurityGroups>"));
        assert!(x.contains("<State><Code>active</Code></State>"));
        assert!(!x.contains("VpcId") && !x.contains("NextMarker"));
        assert!(x.ends_with("<ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></DescribeLoadBalancersResponse>"));
    }

    /// Scalars: booleans and numbers as text; control characters never reach the XML.
    #[test]
    fn scalars() {
        let x = response("X", &json!({"B": true, "N": 42, "S": "a\u{1}b\nc"}), "r");
        assert!(x.contains("<B>true</B><N>42</N><S>a\u{FFFD}b\nc</S>"));
    }

    /// Request ids are UUIDs.
    #[test]
    fn request_ids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, request_id());
    }

    /// The error document carries Type, Code, Message and RequestId.
    #[test]
    fn error_document() {
        let x = error("LoadBalancerNotFound", "no <lb>", true, "r1");
        assert!(x.ends_with("<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code><Message>no &lt;lb&gt;</Message></Error><RequestId>r1</RequestId></ErrorResponse>"));
        assert!(error("InternalFailure", "x", false, "r").contains("<Type>Receiver</Type>"));
    }
}

//! The AWS side of the front door: `X-Amz-Target` parsing, SigV4 authentication,
//! dispatch to the service crates and AWS-shaped errors — each rendered in exactly one
//! place: [`AwsError::response`] for the JSON 1.1 services, [`AwsError::xml_response`]
//! for ELBv2's Query protocol.

use http::{header, HeaderValue, Response, StatusCode};

use berth_registry::Body;

/// The services this front door routes to, by target prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ecr,
    Ecs,
    Logs,
    /// ELBv2: the Query protocol (form body, no `X-Amz-Target`), XML answers.
    Elb,
    /// Cloud Map (ServiceDiscovery), by X-Amz-Target or the RPC v2 CBOR path.
    Discovery,
}

impl Service {
    /// The SigV4 signing name the credential scope must carry (botocore's `signingName`).
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Ecr => "ecr",
            Service::Ecs => "ecs",
            Service::Logs => "logs",
            Service::Elb => "elasticloadbalancing",
            Service::Discovery => "servicediscovery",
        }
    }
}

/// The operation of a Smithy RPC v2 CBOR request path,
/// `/service/Route53AutoNaming_v20170314/operation/<Op>` (botocore builds the segment
/// from the model's `targetPrefix`).
pub fn parse_rpc_path(path: &str) -> Result<(Service, &str), AwsError> {
    let op = path
        .strip_prefix("/service/")
        .and_then(|r| r.strip_prefix(berth_discovery::TARGET_PREFIX))
        .and_then(|r| r.strip_prefix("/operation/"))
        .ok_or_else(|| AwsError::unknown_operation(path))?;
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AwsError::unknown_operation(path));
    }
    Ok((Service::Discovery, op))
}

/// Splits `X-Amz-Target: Prefix.Operation`.
pub fn parse_target(target: &str) -> Result<(Service, &str), AwsError> {
    let (prefix, op) = target
        .split_once('.')
        .ok_or_else(|| AwsError::unknown_operation(target))?;
    let service = match prefix {
        "AmazonEC2ContainerRegistry_V20150921" => Service::Ecr,
        "AmazonEC2ContainerServiceV20141113" => Service::Ecs,
        "Logs_20140328" => Service::Logs,
        berth_discovery::TARGET_PREFIX => Service::Discovery,
        _ => return Err(AwsError::unknown_operation(target)),
    };
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AwsError::unknown_operation(target));
    }
    Ok((service, op))
}

/// An error as the AWS JSON protocol renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub type_name: String,
    pub message: String,
    /// Modeled members besides the message (e.g. Cloud Map's `NamespaceId`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl AwsError {
    pub fn new(status: u16, type_name: &str, message: impl Into<String>) -> Self {
        AwsError {
            status,
            type_name: type_name.to_string(),
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }
    pub fn unknown_operation(target: &str) -> Self {
        let shown: String = target.chars().take(120).collect();
        AwsError::new(400, "UnknownOperationException", format!(
            "X-Amz-Target '{shown}' names no operation berth serves (expected e.g. AmazonEC2ContainerRegistry_V20150921.DescribeRepositories)"
        ))
    }
    pub fn response(&self) -> Response<Body> {
        let mut body = self.extra.clone();
        body.insert("__type".into(), self.type_name.clone().into());
        body.insert("message".into(), self.message.clone().into());
        let mut r = Response::new(Body::full(serde_json::Value::Object(body).to_string()));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        if let Ok(v) = HeaderValue::from_str(&self.type_name) {
            r.headers_mut().insert("x-amzn-ErrorType", v);
        }
        r
    }

    /// The Query protocol's rendering of the same error: ELBv2's XML error document.
    pub fn xml_response(&self, request_id: &str) -> Response<Body> {
        let sender = self.status < 500;
        let body = berth_elb::xml::error(&self.type_name, &self.message, sender, request_id);
        xml(self.status, body, request_id)
    }
}

/// An XML response of the Query protocol with its request id.
pub fn xml(status: u16, body: String, request_id: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-amzn-RequestId", v);
    }
    r
}

/// Maps a SigV4 failure to the error AWS gives for it.
pub fn sigv4_error(e: &berth_sigv4::Sigv4Error) -> AwsError {
    use berth_sigv4::Sigv4Error as E;
    match e {
        E::SignatureMismatch { canonical_request, string_to_sign } => AwsError::new(
            403,
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
            ),
        ),
        E::Expired { .. } | E::NotYetCurrent { .. } => AwsError::new(
            403,
            "InvalidSignatureException",
            format!("{}; check the clock of the machine that signed the request", capitalise(&e.to_string())),
        ),
        other => AwsError::new(403, "IncompleteSignatureException", capitalise(&other.to_string())),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn ecr_error(e: &berth_ecr::EcrError) -> AwsError {
    AwsError::new(e.status(), e.type_name(), e.to_string())
}

pub fn ecs_error(e: &berth_ecs::EcsError) -> AwsError {
    AwsError::new(e.status(), e.type_name(), e.to_string())
}

pub fn elb_error(e: &berth_elb::ElbError) -> AwsError {
    AwsError::new(e.status(), e.code(), e.to_string())
}

/// Whether a request speaks the Query protocol (ELBv2): no `X-Amz-Target` and a
/// form-urlencoded body.
pub fn is_query_request(headers: &http::HeaderMap) -> bool {
    headers.get("x-amz-target").is_none()
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            })
}

pub fn discovery_error(e: &berth_discovery::DiscoveryError) -> AwsError {
    let mut a = AwsError::new(e.status(), e.type_name(), e.to_string());
    a.extra = e.members();
    a.extra.insert("Message".into(), e.to_string().into());
    a
}

/// An error as Smithy RPC v2 CBOR renders it: a CBOR map with `__type` and `message`.
pub fn cbor_error_response(e: &AwsError) -> Response<Body> {
    let body = berth_discovery::error_body(
        berth_discovery::Protocol::Cbor,
        &e.type_name,
        &e.message,
        e.extra.clone(),
    );
    let mut r = cbor_response(body);
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    r
}

/// A Smithy RPC v2 CBOR response with `body`.
pub fn cbor_response(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/cbor"),
    );
    r.headers_mut()
        .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets route by prefix; anything else is UnknownOperationException.
    #[test]
    fn targets() {
        assert_eq!(
            parse_target("AmazonEC2ContainerRegistry_V20150921.CreateRepository"),
            Ok((Service::Ecr, "CreateRepository"))
        );
        assert_eq!(
            parse_target("AmazonEC2ContainerServiceV20141113.RunTask"),
            Ok((Service::Ecs, "RunTask"))
        );
        assert_eq!(Service::Ecs.signing_name(), "ecs");
        assert_eq!(Service::Elb.signing_name(), "elasticloadbalancing");
        assert_eq!(
            parse_target("Route53AutoNaming_v20170314.GetNamespace"),
            Ok((Service::Discovery, "GetNamespace"))
        );
        assert_eq!(
            parse_rpc_path("/service/Route53AutoNaming_v20170314/operation/ListServices"),
            Ok((Service::Discovery, "ListServices"))
        );
        for bad in [
            "/service/Other/operation/X",
            "/service/Route53AutoNaming_v20170314/operation/",
            "/service/Route53AutoNaming_v20170314/operation/A/B",
        ] {
            assert!(parse_rpc_path(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "Nope.CreateRepository",
            "AmazonEC2ContainerRegistry_V20150921.",
            "AmazonEC2ContainerRegistry_V20150921.A/B",
        ] {
            assert_eq!(
                parse_target(bad).unwrap_err().type_name,
                "UnknownOperationException",
                "{bad}"
            );
        }
    }

    /// Query-protocol requests are told apart by their content type and the missing
    /// target header.
    #[test]
    fn query_requests() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert!(is_query_request(&h));
        h.insert("x-amz-target", HeaderValue::from_static("X.Y"));
        assert!(!is_query_request(&h));
        let mut j = http::HeaderMap::new();
        j.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        assert!(!is_query_request(&j));
    }

    /// Errors of Query requests are ELB's XML error document with the same code.
    #[test]
    fn xml_errors() {
        let e = AwsError::new(403, "InvalidSignatureException", "bad <sig>");
        let r = e.xml_response("rid");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml");
    }
}

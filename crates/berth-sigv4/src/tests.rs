use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20150830T123600Z";

fn vanilla<'a>(headers: &'a [(&'a str, &'a str)], query: &'a str) -> Request<'a> {
    Request {
        method: "GET",
        path: "/",
        query,
        headers,
        payload_sha256_hex: EMPTY,
    }
}

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The AWS SigV4 test suite's get-vanilla vector.
#[test]
fn get_vanilla() {
    let h = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
    let a = sign(
        &vanilla(&h, ""),
        "AKIDEXAMPLE",
        SECRET,
        "us-east-1",
        "service",
        DATE,
    );
    assert!(
        a.ends_with("Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        "{a}"
    );
    assert!(a.contains("SignedHeaders=host;x-amz-date"));
}

/// The get-vanilla-query-order-key-case vector: query parameters are sorted.
#[test]
fn get_vanilla_query_order() {
    let h = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
    let a = sign(
        &vanilla(&h, "Param2=value2&Param1=value1"),
        "AKIDEXAMPLE",
        SECRET,
        "us-east-1",
        "service",
        DATE,
    );
    assert!(
        a.ends_with("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        "{a}"
    );
}

fn signed_post(body: &str) -> (Vec<(String, String)>, String) {
    let hash = sha256_hex(body.as_bytes());
    let headers = vec![
        ("host".to_string(), "127.0.0.1:5000".to_string()),
        ("x-amz-date".to_string(), DATE.to_string()),
        (
            "x-amz-target".to_string(),
            "AmazonEC2ContainerRegistry_V20150921.ListImages".to_string(),
        ),
    ];
    let hv: Vec<(&str, &str)> = headers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &hv,
        payload_sha256_hex: &hash,
    };
    let auth = sign(&req, "AKID", SECRET, "eu-west-1", "ecr", DATE);
    (headers, auth)
}

fn check(headers: &[(String, String)], auth: &str, body: &str, now: u64) -> Result<(), Sigv4Error> {
    let hash = sha256_hex(body.as_bytes());
    let hv: Vec<(&str, &str)> = headers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &hv,
        payload_sha256_hex: &hash,
    };
    verify(&req, &parse_authorization(auth)?, SECRET, now, 900)
}

/// What sign produces, verify accepts; a changed body, header or secret is refused.
#[test]
fn round_trip_and_tampering() {
    let now = parse_amz_date(DATE).unwrap();
    let (headers, auth) = signed_post("{}");
    assert_eq!(check(&headers, &auth, "{}", now), Ok(()));
    assert!(matches!(
        check(&headers, &auth, "{\"x\":1}", now),
        Err(Sigv4Error::SignatureMismatch { .. })
    ));
    let mut h2 = headers.clone();
    h2[2].1 = "AmazonEC2ContainerRegistry_V20150921.DeleteRepository".into();
    assert!(matches!(
        check(&h2, &auth, "{}", now),
        Err(Sigv4Error::SignatureMismatch { .. })
    ));
    let hash = sha256_hex(b"{}");
    let hv: Vec<(&str, &str)> = headers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &hv,
        payload_sha256_hex: &hash,
    };
    assert!(matches!(
        verify(
            &req,
            &parse_authorization(&auth).unwrap(),
            "wrong",
            now,
            900
        ),
        Err(Sigv4Error::SignatureMismatch { .. })
    ));
}

/// Requests more than the allowed skew away from now are refused both ways.
#[test]
fn clock_skew() {
    let t = parse_amz_date(DATE).unwrap();
    let (headers, auth) = signed_post("{}");
    assert!(matches!(
        check(&headers, &auth, "{}", t + 901),
        Err(Sigv4Error::Expired { .. })
    ));
    assert!(matches!(
        check(&headers, &auth, "{}", t - 901),
        Err(Sigv4Error::NotYetCurrent { .. })
    ));
    assert_eq!(check(&headers, &auth, "{}", t + 899), Ok(()));
    let e = check(&headers, &auth, "{}", t + 1200)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("signature expired: 20150830T123600Z is now earlier than 20150830T124100Z (20150830T125600Z - 15 min.)"), "{e}");
}

/// Scope date, unsigned host and missing signed headers are each reported.
#[test]
fn structural_errors() {
    let t = parse_amz_date(DATE).unwrap();
    let (headers, auth) = signed_post("{}");
    let other_day = auth.replace("/20150830/", "/20150831/");
    assert!(matches!(
        check(&headers, &other_day, "{}", t),
        Err(Sigv4Error::ScopeDateMismatch { .. })
    ));
    let no_host = auth.replace("SignedHeaders=host;", "SignedHeaders=");
    assert_eq!(
        check(&headers, &no_host, "{}", t),
        Err(Sigv4Error::HostNotSigned)
    );
    let extra = auth.replace("x-amz-target", "x-amz-target;x-missing");
    assert_eq!(
        check(&headers, &extra, "{}", t),
        Err(Sigv4Error::MissingSignedHeader("x-missing".into()))
    );
    let no_date: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != "x-amz-date")
        .cloned()
        .collect();
    assert_eq!(
        check(&no_date, &auth, "{}", t),
        Err(Sigv4Error::MissingDate)
    );
}

/// Malformed Authorization headers are refused with a reason.
#[test]
fn parse_errors() {
    assert!(matches!(
        parse_authorization("Basic abc"),
        Err(Sigv4Error::UnsupportedAlgorithm(_))
    ));
    assert!(matches!(
        parse_authorization("AWS4-HMAC-SHA256"),
        Err(Sigv4Error::MalformedAuthorization(_))
    ));
    assert!(matches!(
        parse_authorization("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"),
        Err(Sigv4Error::MalformedAuthorization(_))
    ));
    let sig = "0".repeat(64);
    assert!(matches!(
        parse_authorization(&format!(
            "AWS4-HMAC-SHA256 Credential=AK/2015/us/ecr, SignedHeaders=host, Signature={sig}"
        )),
        Err(Sigv4Error::MalformedCredential(_))
    ));
    let a = parse_authorization(&format!("AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/ecr/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}")).unwrap();
    assert_eq!(a.service, "ecr");
    assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
}

/// Dates round-trip through format/parse, including leap days and year ends.
#[test]
fn amz_dates() {
    for t in [
        0u64,
        951_782_400,
        1_709_164_800,
        1_440_938_160,
        4_102_444_799,
        253_402_300_799,
    ] {
        assert_eq!(parse_amz_date(&format_amz_date(t)), Ok(t), "{t}");
    }
    assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
    for bad in [
        "20150230T000000Z",
        "2015-08-30T12:36:00Z",
        "20150830T246000Z",
        "2015083OT123600Z",
        "",
    ] {
        assert!(parse_amz_date(bad).is_err(), "{bad}");
    }
    let mut t = 0u64;
    while t < 4_000_000_000 {
        assert_eq!(parse_amz_date(&format_amz_date(t)), Ok(t));
        t += 86_399 * 7 + 13;
    }
}

/// Path and query canonicalisation re-encodes with the unreserved set.
#[test]
fn canonical_forms() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/a b/%7Ec"), "/a%20b/~c");
    assert_eq!(canonical_query("b=2&a=%2F&c"), "a=%2F&b=2&c=");
}

mod properties {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        /// Parsing arbitrary Authorization headers and dates never panics.
        #[test]
        fn parsers_total(s in "\\PC{0,200}") {
            let _ = parse_authorization(&s);
            let _ = parse_amz_date(&s);
            let _ = parse_authorization(&format!("AWS4-HMAC-SHA256 {s}"));
        }

        /// Verification of an arbitrary request with arbitrary headers never panics.
        #[test]
        fn verify_total(path in "\\PC{0,40}", query in "\\PC{0,40}", hv in "\\PC{0,40}", now in 0u64..5_000_000_000) {
            let headers = [("host", hv.as_str()), ("x-amz-date", "20150830T123600Z")];
            let req = Request { method: "POST", path: &path, query: &query, headers: &headers, payload_sha256_hex: "" };
            let auth = parse_authorization(&format!(
                "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/ecr/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
                "0".repeat(64)
            )).unwrap();
            let _ = verify(&req, &auth, "secret", now, 900);
        }

        /// Every timestamp formats to a date that parses back to it.
        #[test]
        fn dates_round_trip(t in 0u64..253_402_300_799) {
            prop_assert_eq!(parse_amz_date(&format_amz_date(t)), Ok(t));
        }
    }
}

/// RFC 3339 times agree with the amz-date form and with Python's datetime.
#[test]
fn rfc3339_dates() {
    assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(format_rfc3339(1_440_938_160), "2015-08-30T12:36:00Z");
    assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
}

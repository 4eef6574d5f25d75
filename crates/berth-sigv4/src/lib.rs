//! AWS Signature Version 4 for berth: canonical requests, the string to sign, signing
//! keys, verification (with clock-skew checks) for the server and signing for clients.
//!
//! Pure: no I/O and no clock — the caller hands in "now". Follows the AWS General
//! Reference, "Create a signed AWS API request" (canonical URI, query and headers as
//! botocore builds them for services other than S3).
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// One HTTP request as seen by the signer/verifier. `path` and `query` are raw, as
/// sent on the wire; `headers` are name/value pairs as received.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256_hex: &'a str,
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `yyyymmdd`
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sigv4Error {
    #[error("authorization header is malformed: {0}")]
    MalformedAuthorization(String),
    #[error("unsupported signing algorithm '{0}' (only AWS4-HMAC-SHA256 is accepted)")]
    UnsupportedAlgorithm(String),
    #[error("credential '{0}' must be <access key>/<yyyymmdd>/<region>/<service>/aws4_request")]
    MalformedCredential(String),
    #[error("request has no x-amz-date (or date) header")]
    MissingDate,
    #[error("request date '{0}' is not in ISO 8601 basic format (20150830T123600Z)")]
    MalformedDate(String),
    #[error(
        "signature expired: {request} is now earlier than {limit} ({now} - {skew_minutes} min.)"
    )]
    Expired {
        request: String,
        limit: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("signature not yet current: {request} is still later than {limit} ({now} + {skew_minutes} min.)")]
    NotYetCurrent {
        request: String,
        limit: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("credential scope date {scope} does not match the request date {request}")]
    ScopeDateMismatch { scope: String, request: String },
    #[error("the host header must be signed")]
    HostNotSigned,
    #[error("signed header '{0}' is not in the request")]
    MissingSignedHeader(String),
    #[error("signature does not match")]
    SignatureMismatch {
        canonical_request: String,
        string_to_sign: String,
    },
}

/// Parses the value of an `Authorization` header.
pub fn parse_authorization(value: &str) -> Result<Authorization, Sigv4Error> {
    let value = value.trim();
    let (alg, rest) = value.split_once(char::is_whitespace).ok_or_else(|| {
        Sigv4Error::MalformedAuthorization(
            "expected '<algorithm> Credential=..., SignedHeaders=..., Signature=...'".into(),
        )
    })?;
    if alg != ALGORITHM {
        return Err(Sigv4Error::UnsupportedAlgorithm(
            alg.chars().take(64).collect(),
        ));
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| {
            Sigv4Error::MalformedAuthorization(format!(
                "'{}' is not key=value",
                part.chars().take(64).collect::<String>()
            ))
        })?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => {}
        }
    }
    let missing = |n: &str| {
        Sigv4Error::MalformedAuthorization(format!("authorization header requires '{n}' parameter"))
    };
    let cred = cred.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let sig = sig.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5
        || parts[4] != "aws4_request"
        || parts[0].is_empty()
        || parts[1].len() != 8
        || !parts[1].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Sigv4Error::MalformedCredential(
            cred.chars().take(128).collect(),
        ));
    }
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Sigv4Error::MalformedAuthorization(
            "Signature must be 64 hex characters".into(),
        ));
    }
    Ok(Authorization {
        access_key_id: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature: sig.to_ascii_lowercase(),
    })
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn pct_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    pct_encode(&pct_decode(path), true)
}

fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                pct_encode(&pct_decode(k), false),
                pct_encode(&pct_decode(v), false),
            )
        })
        .collect();
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn collapse(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header_value(headers: &[(&str, &str)], name: &str) -> Option<String> {
    let vals: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| collapse(v))
        .collect();
    (!vals.is_empty()).then(|| vals.join(","))
}

fn canonical_request(req: &Request, signed: &[String]) -> Result<String, Sigv4Error> {
    let mut headers = String::new();
    for name in signed {
        let v = header_value(req.headers, name)
            .ok_or_else(|| Sigv4Error::MissingSignedHeader(name.clone()))?;
        headers.push_str(&format!("{name}:{v}\n"));
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed.join(";"),
        req.payload_sha256_hex
    ))
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

fn signature(secret: &str, date: &str, region: &str, service: &str, sts: &str) -> String {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    hex::encode(hmac(&k, sts.as_bytes()))
}

/// The request's time: `x-amz-date`, else an RFC 1123 `date` header.
fn request_time(req: &Request) -> Result<(String, u64), Sigv4Error> {
    if let Some(v) = header_value(req.headers, "x-amz-date") {
        let t = parse_amz_date(&v)?;
        return Ok((v, t));
    }
    let v = header_value(req.headers, "date").ok_or(Sigv4Error::MissingDate)?;
    let t =
        parse_rfc1123(&v).ok_or_else(|| Sigv4Error::MalformedDate(v.chars().take(64).collect()))?;
    Ok((format_amz_date(t), t))
}

/// Verifies `req` against its parsed `auth` and the key's `secret`.
pub fn verify(
    req: &Request,
    auth: &Authorization,
    secret: &str,
    now_unix: u64,
    max_skew_secs: u64,
) -> Result<(), Sigv4Error> {
    let (amz_date, t) = request_time(req)?;
    let skew_minutes = max_skew_secs / 60;
    if t + max_skew_secs < now_unix {
        return Err(Sigv4Error::Expired {
            request: amz_date,
            limit: format_amz_date(now_unix - max_skew_secs),
            now: format_amz_date(now_unix),
            skew_minutes,
        });
    }
    if t > now_unix + max_skew_secs {
        return Err(Sigv4Error::NotYetCurrent {
            request: amz_date,
            limit: format_amz_date(now_unix + max_skew_secs),
            now: format_amz_date(now_unix),
            skew_minutes,
        });
    }
    if auth.date != amz_date[..8] {
        return Err(Sigv4Error::ScopeDateMismatch {
            scope: auth.date.clone(),
            request: amz_date[..8].to_string(),
        });
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(Sigv4Error::HostNotSigned);
    }
    let canonical = canonical_request(req, &auth.signed_headers)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let want = signature(secret, &auth.date, &auth.region, &auth.service, &sts);
    // Constant-time comparison: the HMAC of both sides under a throwaway key.
    let mut m = Hmac::<Sha256>::new_from_slice(b"berth-compare").expect("hmac takes any key");
    m.update(want.as_bytes());
    let expected = m.finalize().into_bytes();
    let mut m = Hmac::<Sha256>::new_from_slice(b"berth-compare").expect("hmac takes any key");
    m.update(auth.signature.as_bytes());
    if m.verify_slice(&expected).is_err() {
        return Err(Sigv4Error::SignatureMismatch {
            canonical_request: canonical,
            string_to_sign: sts,
        });
    }
    Ok(())
}

/// The `Authorization` header value for `req` (which must already carry `host` and
/// `x-amz-date` = `amz_date`); every header present is signed.
pub fn sign(
    req: &Request,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let canonical = canonical_request(req, &names).expect("every header present");
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let sig = signature(secret, date, region, service, &sts);
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}",
        names.join(";")
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `2015-08-30T12:36:00Z` (RFC 3339, UTC) for a Unix time.
pub fn format_rfc3339(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86400) as i64);
    let secs = unix % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `20150830T123600Z` for a Unix time.
pub fn format_amz_date(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Unix time of a `20150830T123600Z` date.
pub fn parse_amz_date(s: &str) -> Result<u64, Sigv4Error> {
    let bad = || Sigv4Error::MalformedDate(s.chars().take(64).collect());
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, Sigv4Error> {
        let part = &s[r];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(9..11)?,
        num(11..13)?,
        num(13..15)?,
    );
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y as i64, mo)
        || h > 23
        || mi > 59
        || se > 60
        || y < 1970
    {
        return Err(bad());
    }
    let days = days_from_civil(y as i64, mo, d);
    Ok(days as u64 * 86400 + h as u64 * 3600 + mi as u64 * 60 + se as u64)
}

/// `Sun, 30 Aug 2015 12:36:00 GMT`
fn parse_rfc1123(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let d: u32 = parts[1].parse().ok()?;
    let m = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|x| *x == parts[2])? as u32
        + 1;
    let y: u32 = parts[3].parse().ok()?;
    let hms: Vec<u32> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    parse_amz_date(&format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        hms[0], hms[1], hms[2]
    ))
    .ok()
}

#[cfg(test)]
mod tests;

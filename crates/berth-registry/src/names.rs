//! Repository names, tags, digests and references, validated as the OCI
//! Distribution Spec v1.1 ("Pulling manifests", `<name>` and `<reference>` grammar)
//! and ECR (2–256 characters) require. Everything here is pure.

use std::fmt;

/// Longest repository name ECR accepts.
pub const MAX_NAME_LEN: usize = 256;
/// Shortest repository name ECR accepts.
pub const MIN_NAME_LEN: usize = 2;
/// Longest tag the spec accepts (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must be {MIN_NAME_LEN} to {MAX_NAME_LEN} characters, got {0}")]
    Length(usize),
    #[error("repository name '{0}' must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*")]
    Grammar(String),
    #[error("tag '{0}' must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error("digest '{0}' must be sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")]
    Digest(String),
}

/// A validated repository name such as `team/web`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() < MIN_NAME_LEN || s.len() > MAX_NAME_LEN {
            return Err(NameError::Length(s.len()));
        }
        if !s.split('/').all(component_ok) {
            return Err(NameError::Grammar(truncate(s)));
        }
        Ok(RepoName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut need_alnum = true;
    while i < b.len() {
        if alnum(b[i]) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        // a separator: ".", "_", "__" or "-+"
        let sep_len = match b[i] {
            b'.' => 1,
            b'_' if b.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => b[i..].iter().take_while(|&&x| x == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        need_alnum = true;
    }
    !need_alnum
}

/// Validates a tag.
pub fn validate_tag(t: &str) -> Result<(), NameError> {
    let b = t.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Tag(truncate(t)))
    }
}

/// A validated content digest (`sha256:…` or `sha512:…`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| NameError::Digest(truncate(s)))?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(NameError::Digest(truncate(s))),
        };
        if hex.len() != want || !hex.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NameError::Digest(truncate(s)));
        }
        Ok(Digest(s.to_string()))
    }
    /// The digest of `data` with sha256.
    pub fn sha256_of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(data))
        ))
    }
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or("")
    }
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or("")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's name grammar: accepted and refused examples, including path escapes.
    #[test]
    fn repo_names() {
        for ok in [
            "ab",
            "hello-world",
            "team/web",
            "a.b_c__d---e/f0",
            "x1/y2/z3",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a", "../x", "x/..", "UPPER", "a//b", "/ab", "ab/", "a_", "-a", "a___b", "a b", "a\0b",
            "ab/.", "ab/./c",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RepoName::parse(&"a".repeat(257)),
            Err(NameError::Length(257))
        );
    }

    /// Tags follow the spec's grammar and length.
    #[test]
    fn tags() {
        assert!(validate_tag("latest").is_ok());
        assert!(validate_tag("_v1.2-rc").is_ok());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag(&"a".repeat(129)).is_err());
        assert!(validate_tag("a/b").is_err());
    }

    /// Digests must name a supported algorithm with the right hex length.
    #[test]
    fn digests() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(Digest::parse(d.as_str()).is_ok());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Digest::parse(&d.as_str().to_uppercase()).is_err());
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(NameError::Digest(_))
        ));
    }
}

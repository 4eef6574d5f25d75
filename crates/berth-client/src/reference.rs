//! Image references: `[HOST:PORT/]REPO[:TAG|@DIGEST]`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host:port` when the reference names a registry.
    pub registry: Option<String>,
    pub repository: String,
    /// A tag or a digest (`sha256:…`).
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference '{0}' must be [HOST:PORT/]REPOSITORY[:TAG|@DIGEST]")]
pub struct RefError(pub String);

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let bad = || RefError(s.to_string());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        // The first component is a registry when it has a '.' or ':' or is localhost.
        let (registry, path) = match rest.split_once('/') {
            Some((first, p)) if first.contains(['.', ':']) || first == "localhost" => {
                (Some(first.to_string()), p)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(bad());
        }
        let reference = match (digest, tag) {
            (Some(d), _) => d,
            (None, Some(t)) if !t.is_empty() => t,
            (None, Some(_)) => return Err(bad()),
            (None, None) => "latest".to_string(),
        };
        Ok(ImageRef {
            registry,
            repository: repository.to_string(),
            reference,
        })
    }

    pub fn is_digest(&self) -> bool {
        self.reference.contains(':')
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        let sep = if self.is_digest() { '@' } else { ':' };
        write!(f, "{}{sep}{}", self.repository, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registries, tags, digests and defaults are told apart.
    #[test]
    fn parses() {
        let r = ImageRef::parse("hello").unwrap();
        assert_eq!(
            (r.registry, r.repository.as_str(), r.reference.as_str()),
            (None, "hello", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/team/web:v1").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("team/web", "v1")
        );
        let r = ImageRef::parse("team/web@sha256:abc").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.reference.as_str()),
            (None, "sha256:abc")
        );
        assert!(r.is_digest());
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a:").is_err());
        assert_eq!(
            ImageRef::parse("localhost/x").unwrap().registry.as_deref(),
            Some("localhost")
        );
    }
}

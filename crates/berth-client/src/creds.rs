//! Finding credentials the way the AWS CLI does, plus berth's data directory.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_SHARED_CREDENTIALS_FILE, or pass --data-dir of the berth server (it writes DATA_DIR/credentials)")]
    NotFound,
    #[error("cannot read credentials file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {path} has no profile [{profile}] with aws_access_key_id and aws_secret_access_key")]
    Profile { path: String, profile: String },
}

/// Parses an AWS shared-credentials file and returns (key id, secret) of `profile`.
pub fn parse_profile(text: &str, profile: &str) -> Option<(String, String)> {
    let mut current = String::new();
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().trim_start_matches("profile ").to_string();
            continue;
        }
        if current != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((id?, secret?))
}

/// The credentials file of `berth server` with its default data directory.
pub const DEFAULT_SERVER_CREDENTIALS: &str = "/var/lib/berth/credentials";

impl Credentials {
    /// Looks in order at: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `data_dir`'s
    /// credentials file, `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`, and the
    /// credentials of a local server with the default data directory.
    pub fn discover(data_dir: Option<&Path>) -> Result<Self, CredentialError> {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                region,
            });
        }
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = data_dir {
            candidates.push(d.join("credentials"));
        }
        if let Ok(f) = std::env::var("AWS_SHARED_CREDENTIALS_FILE") {
            candidates.push(PathBuf::from(f));
        }
        if let Ok(home) = std::env::var("HOME") {
            candidates.push(Path::new(&home).join(".aws/credentials"));
        }
        // Last, what a local `berth server` with the default data directory wrote.
        candidates.push(PathBuf::from(DEFAULT_SERVER_CREDENTIALS));
        for path in candidates {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CredentialError::Read {
                        path: path.display().to_string(),
                        source,
                    })
                }
            };
            return match parse_profile(&text, &profile) {
                Some((id, secret)) => Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                    region,
                }),
                None => Err(CredentialError::Profile {
                    path: path.display().to_string(),
                    profile,
                }),
            };
        }
        Err(CredentialError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Profiles are found by name; comments and other profiles are ignored.
    #[test]
    fn parses_profiles() {
        let text = "# c\n[default]\naws_access_key_id = AK1\naws_secret_access_key=S1\n[profile dev]\naws_access_key_id=AK2\naws_secret_access_key = S2\n";
        assert_eq!(
            parse_profile(text, "default"),
            Some(("AK1".into(), "S1".into()))
        );
        assert_eq!(
            parse_profile(text, "dev"),
            Some(("AK2".into(), "S2".into()))
        );
        assert_eq!(parse_profile(text, "prod"), None);
        assert_eq!(
            parse_profile("[default]\naws_access_key_id=x\n", "default"),
            None
        );
    }
}

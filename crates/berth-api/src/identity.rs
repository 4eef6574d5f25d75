//! Identities: the admin access key created on first start, the account id, and the
//! registry passwords handed out by `GetAuthorizationToken`.
//!
//! A registry password is `<access key id>.<expiry>.<hmac>`, where the HMAC-SHA256 is
//! keyed with the access key's secret, so it is checked without storing it and dies
//! with its key. It lasts [`REGISTRY_PASSWORD_TTL_SECS`], as ECR's tokens do.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use berth_state::{Compare, Op, Store};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// ECR's authorization tokens last 12 hours.
pub const REGISTRY_PASSWORD_TTL_SECS: u64 = 12 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot write credentials file {path}")]
    WriteCredentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate random key material")]
    Random(#[source] getrandom::Error),
    #[error("state store failure")]
    State(#[from] berth_state::StateError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    secret: String,
    user: String,
    created_at: u64,
}

/// Why a registry password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is not one berth issued; get one with 'aws ecr get-login-password'")]
    Malformed,
    #[error("the password has expired; get a new one with 'aws ecr get-login-password'")]
    Expired,
    #[error("the password was issued for an access key that no longer exists")]
    UnknownKey,
    #[error("the password is not valid; get a new one with 'aws ecr get-login-password'")]
    BadMac,
}

pub struct Identities {
    store: Arc<dyn Store>,
    account: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("account", &self.account)
            .finish()
    }
}

fn random_string(len: usize, alphabet: &[u8]) -> Result<String, IdentityError> {
    let mut raw = vec![0u8; len];
    getrandom::getrandom(&mut raw).map_err(IdentityError::Random)?;
    Ok(raw
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGITS: &[u8] = b"0123456789";

fn mac(secret: &str, msg: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key");
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

impl Identities {
    /// Loads identities, creating the account and the admin key on first start, and
    /// (re)writes `credentials_path` for the admin key if it is missing.
    pub fn open(
        store: Arc<dyn Store>,
        credentials_path: &Path,
        now: u64,
    ) -> Result<Self, IdentityError> {
        let account = match store.get("iam/account") {
            Some(e) => e.value,
            None => {
                let mut acct = random_string(12, DIGITS)?;
                if acct.starts_with('0') {
                    acct.replace_range(0..1, "1");
                }
                // Only the first writer wins; a concurrent start reads the winner's.
                match store.txn(
                    &[Compare::absent("iam/account")],
                    vec![Op::Put {
                        key: "iam/account".into(),
                        value: acct.clone(),
                    }],
                ) {
                    Ok(_) => acct,
                    Err(_) => store.get("iam/account").map(|e| e.value).unwrap_or(acct),
                }
            }
        };
        let ids = Identities { store, account };
        let admin = ids.store.list("iam/keys/").into_iter().find_map(|(k, e)| {
            let rec: KeyRecord = serde_json::from_str(&e.value).ok()?;
            (rec.user == "admin").then(|| (k["iam/keys/".len()..].to_string(), rec.secret))
        });
        let (akid, secret) = match admin {
            Some(a) => a,
            None => {
                let akid = format!("AKIA{}", random_string(16, UPPER_DIGITS)?);
                let secret = random_string(40, SECRET_ALPHABET)?;
                let rec = KeyRecord {
                    secret: secret.clone(),
                    user: "admin".into(),
                    created_at: now,
                };
                ids.store.put(
                    &format!("iam/keys/{akid}"),
                    serde_json::to_string(&rec).expect("serialises"),
                )?;
                tracing::info!(access_key_id = %akid, "created admin identity");
                (akid, secret)
            }
        };
        if !credentials_path.exists() {
            write_credentials(credentials_path, &akid, &secret)?;
        }
        Ok(ids)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The secret of an access key, if the key exists.
    pub fn secret(&self, access_key_id: &str) -> Option<String> {
        if access_key_id.is_empty() || access_key_id.len() > 128 || access_key_id.contains('/') {
            return None;
        }
        let e = self.store.get(&format!("iam/keys/{access_key_id}"))?;
        serde_json::from_str::<KeyRecord>(&e.value)
            .ok()
            .map(|r| r.secret)
    }

    /// A registry password for `access_key_id` and when it expires.
    pub fn registry_password(&self, access_key_id: &str, now: u64) -> Option<(String, u64)> {
        let secret = self.secret(access_key_id)?;
        let expires = now + REGISTRY_PASSWORD_TTL_SECS;
        let msg = format!("berth-registry:{access_key_id}:{expires}");
        Some((
            format!(
                "{access_key_id}.{expires}.{}",
                hex::encode(mac(&secret, &msg))
            ),
            expires,
        ))
    }

    /// Checks a registry password; returns the access key it was issued to.
    pub fn check_password(&self, password: &str, now: u64) -> Result<String, PasswordError> {
        let mut parts = password.trim().split('.');
        let (Some(akid), Some(exp), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PasswordError::Malformed);
        };
        let expires: u64 = exp.parse().map_err(|_| PasswordError::Malformed)?;
        let sig = hex::decode(sig).map_err(|_| PasswordError::Malformed)?;
        let secret = self.secret(akid).ok_or(PasswordError::UnknownKey)?;
        let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key");
        m.update(format!("berth-registry:{akid}:{expires}").as_bytes());
        m.verify_slice(&sig).map_err(|_| PasswordError::BadMac)?;
        if now > expires {
            return Err(PasswordError::Expired);
        }
        Ok(akid.to_string())
    }
}

fn write_credentials(path: &Path, akid: &str, secret: &str) -> Result<(), IdentityError> {
    let err = |source| IdentityError::WriteCredentials {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    write!(
        f,
        "[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n"
    )
    .map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (tempfile::TempDir, Identities) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(berth_state::Embedded::open(&dir.path().join("state")).unwrap());
        let ids = Identities::open(store, &dir.path().join("credentials"), 1000).unwrap();
        (dir, ids)
    }

    /// First start writes a 0600 credentials file whose key the store knows.
    #[test]
    fn creates_admin_credentials() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, ids) = ids();
        let path = dir.path().join("credentials");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[default]\naws_access_key_id = AKIA"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let akid = text.lines().nth(1).unwrap().split(" = ").nth(1).unwrap();
        let secret = text.lines().nth(2).unwrap().split(" = ").nth(1).unwrap();
        assert_eq!(ids.secret(akid).as_deref(), Some(secret));
        assert_eq!(ids.account().len(), 12);
    }

    /// Passwords verify until they expire; tampering is refused.
    #[test]
    fn registry_passwords() {
        let (dir, ids) = ids();
        let text = fs::read_to_string(dir.path().join("credentials")).unwrap();
        let akid = text.lines().nth(1).unwrap().split(" = ").nth(1).unwrap();
        let (pw, exp) = ids.registry_password(akid, 1000).unwrap();
        assert_eq!(ids.check_password(&pw, 1000).as_deref(), Ok(akid));
        assert_eq!(
            ids.check_password(&pw, exp + 1),
            Err(PasswordError::Expired)
        );
        let tampered = pw.replace(&exp.to_string(), &(exp + 100).to_string());
        assert_eq!(
            ids.check_password(&tampered, 1000),
            Err(PasswordError::BadMac)
        );
        assert_eq!(
            ids.check_password("nonsense", 1000),
            Err(PasswordError::Malformed)
        );
        assert!(ids.registry_password("AKIANOPE", 1000).is_none());
    }
}

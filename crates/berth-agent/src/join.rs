//! Joining a host to a server: the join token and TLS pinned by it.
//!
//! The server writes `DIR/join-token` on first start: `BERTH1-<sha256 of the server's
//! certificate, hex>-<secret, hex>`. An agent that presents the token (the whole string,
//! `--token` or `--token-file`) trusts exactly the certificate whose hash the token
//! carries — no certificate authority, no names, as Docker Swarm's `SWMTKN-1-<ca hash>-…`
//! and k3s's `K10<ca hash>::…` tokens do — and proves itself to the server with the
//! secret (a bearer credential on every request, compared in constant time). A wrong
//! hash fails the handshake before anything is sent; a wrong secret gets a 401 that
//! says so.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

/// The token's prefix (and version).
pub const TOKEN_PREFIX: &str = "BERTH1";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the server certificate's DER encoding.
    pub cert_sha256: [u8; 32],
    /// The shared secret, hex.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("cert_sha256", &hex::encode(self.cert_sha256))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a token string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token starts with {TOKEN_PREFIX}- (see DIR/join-token on the server)")]
    Prefix,
    #[error("the join token's certificate hash must be 64 hex characters")]
    Hash,
    #[error("the join token's secret must be at least 32 hex characters")]
    Secret,
}

impl JoinToken {
    /// A token for the certificate `cert_der` with a fresh random secret.
    pub fn generate(cert_der: &[u8]) -> std::io::Result<JoinToken> {
        let mut secret = [0u8; 24];
        getrandom::getrandom(&mut secret).map_err(std::io::Error::other)?;
        Ok(JoinToken {
            cert_sha256: sha2::Sha256::digest(cert_der).into(),
            secret: hex::encode(secret),
        })
    }

    /// Parses `BERTH1-<64 hex>-<hex secret>` (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or(TokenError::Prefix)?;
        let (hash, secret) = rest.split_once('-').ok_or(TokenError::Hash)?;
        let mut cert_sha256 = [0u8; 32];
        if hash.len() != 64 || hex::decode_to_slice(hash, &mut cert_sha256).is_err() {
            return Err(TokenError::Hash);
        }
        if secret.len() < 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Secret);
        }
        Ok(JoinToken {
            cert_sha256,
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// Whether `presented` is this token's secret (constant time in its length).
    pub fn secret_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// A TLS client configuration that trusts only the pinned certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedCert {
            sha256: self.cert_sha256,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{}-{}",
            hex::encode(self.cert_sha256),
            self.secret
        )
    }
}

/// Trusts exactly one certificate, by the SHA-256 of its DER encoding; signatures are
/// still checked with the certificate's key, so the peer must hold the private key.
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (sha256 {}) is not the one the join token names (sha256 {}): a wrong token, or not the berth server you meant",
                hex::encode(got),
                hex::encode(self.sha256)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token survives formatting and parsing unchanged.
    #[test]
    fn round_trip() {
        let t = JoinToken::generate(b"cert").unwrap();
        assert_eq!(JoinToken::parse(&format!(" {t}\n")).unwrap(), t);
    }

    /// Malformed tokens are refused with the part that is wrong.
    #[test]
    fn malformed() {
        let hash = "ab".repeat(32);
        let secret = "cd".repeat(16);
        assert_eq!(JoinToken::parse("SWMTKN-1-x"), Err(TokenError::Prefix));
        assert_eq!(
            JoinToken::parse(&format!("BERTH1-{}-{secret}", &hash[..10])),
            Err(TokenError::Hash)
        );
        assert_eq!(
            JoinToken::parse(&format!("BERTH1-{hash}-abc")),
            Err(TokenError::Secret)
        );
        assert_eq!(
            JoinToken::parse(&format!("BERTH1-{hash}-{}zz", &secret[2..])),
            Err(TokenError::Secret)
        );
        assert!(JoinToken::parse(&format!("BERTH1-{hash}-{secret}")).is_ok());
    }

    /// Only the exact secret matches.
    #[test]
    fn secret_compare() {
        let t = JoinToken::generate(b"c").unwrap();
        assert!(t.secret_matches(&t.secret.clone()));
        assert!(!t.secret_matches(&t.secret[1..]));
        let mut wrong = t.secret.clone().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        assert!(!t.secret_matches(std::str::from_utf8(&wrong).unwrap()));
    }
}

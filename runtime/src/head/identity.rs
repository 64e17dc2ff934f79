//! A cluster identity made ahead of the head: its CA and join token, kept
//! outside the head (a Kubernetes Secret mounted as files) so that nodes
//! can be given the token before the head runs. `prism k8s secret` makes
//! one; `prism start --head --identity DIR` starts a new cluster with it
//! instead of drawing a fresh CA and token.

use crate::token::JoinToken;
use crate::transport::tls::{fingerprint_pem, ClusterCa};
use std::path::Path;

/// The files of an identity directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// The join token, `<secret>.<ca fingerprint>`.
pub const TOKEN_FILE: &str = "token";

/// A CA (certificate and key, PEM) and the join token that pins it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The CA private key, PEM (secret).
    pub ca_key_pem: String,
    /// The join token; its fingerprint is the CA's.
    pub token: JoinToken,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterIdentity({:?})", self.token)
    }
}

/// An identity directory is missing a file or does not hang together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster identity in {dir}: {why}")]
pub struct IdentityError {
    /// The directory.
    pub dir: String,
    /// What is wrong.
    pub why: String,
}

impl ClusterIdentity {
    /// A new CA and a token for it.
    pub fn generate() -> Result<ClusterIdentity, crate::transport::tls::TlsError> {
        let ca = ClusterCa::generate()?;
        let token = JoinToken::generate(&ca.fingerprint()?);
        Ok(ClusterIdentity {
            ca_cert_pem: ca.cert_pem,
            ca_key_pem: ca.key_pem,
            token,
        })
    }

    /// Reads `ca.pem`, `ca.key` and `token` from `dir` and checks that the
    /// token pins this CA and that the key signs for it.
    pub fn from_dir(dir: &Path) -> Result<ClusterIdentity, IdentityError> {
        let err = |why: String| IdentityError {
            dir: dir.display().to_string(),
            why,
        };
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| err(format!("cannot read {name}: {e}")))
        };
        let ca_cert_pem = read(CA_CERT_FILE)?;
        let ca_key_pem = read(CA_KEY_FILE)?;
        let token: JoinToken = read(TOKEN_FILE)?
            .parse()
            .map_err(|e| err(format!("{TOKEN_FILE}: {e}")))?;
        let identity = ClusterIdentity {
            ca_cert_pem,
            ca_key_pem,
            token,
        };
        identity.ca().map_err(err)?;
        Ok(identity)
    }

    /// The CA, checked: the token pins it and the key signs for it.
    pub fn ca(&self) -> Result<ClusterCa, String> {
        let fingerprint =
            fingerprint_pem(&self.ca_cert_pem).map_err(|e| format!("{CA_CERT_FILE}: {e}"))?;
        if !fingerprint.starts_with(&self.token.ca_fingerprint) {
            return Err(format!(
                "the token pins CA {} but {CA_CERT_FILE} is CA {} (files from two different identities?)",
                self.token.ca_fingerprint,
                &fingerprint[..32]
            ));
        }
        // The key must be the certificate's: a node certificate it signs
        // must verify against the CA certificate peers trust.
        let ca = ClusterCa::load(&self.ca_cert_pem, &self.ca_key_pem)
            .map_err(|e| format!("{CA_KEY_FILE}: {e}"))?;
        if !crate::transport::tls::signed_by(&ca, &self.ca_cert_pem) {
            return Err(format!("{CA_KEY_FILE} is not the key of {CA_CERT_FILE}"));
        }
        Ok(ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_reads_back_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let id = ClusterIdentity::generate().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), &id.ca_cert_pem).unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), &id.ca_key_pem).unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), format!("{}\n", id.token)).unwrap();
        assert_eq!(ClusterIdentity::from_dir(dir.path()).unwrap(), id);
        assert!(id.ca().is_ok());
    }

    #[test]
    fn mismatched_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = ClusterIdentity::generate().unwrap();
        let b = ClusterIdentity::generate().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), &a.ca_cert_pem).unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), &a.ca_key_pem).unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), b.token.to_string()).unwrap();
        let e = ClusterIdentity::from_dir(dir.path()).unwrap_err();
        assert!(e.why.contains("the token pins CA"), "{e}");
        std::fs::write(dir.path().join(TOKEN_FILE), a.token.to_string()).unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), &b.ca_key_pem).unwrap();
        let e = ClusterIdentity::from_dir(dir.path()).unwrap_err();
        assert!(e.why.contains("is not the key of"), "{e}");
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let e = ClusterIdentity::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("cannot read ca.key"), "{e}");
    }
}

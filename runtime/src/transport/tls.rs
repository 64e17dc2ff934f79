//! The cluster's certificate authority, node certificates, and the rustls
//! configurations built from them.
//!
//! - The head generates a CA at start ([`ClusterCa::generate`]) and keeps its
//!   key in the session directory (mode 0600).
//! - The join token is `<secret>.<ca fingerprint>`: a raylet that has only the
//!   token verifies the head by pinning the CA's SHA-256 fingerprint
//!   ([`ClientTrust::Pinned`]), proves itself with the secret, and receives a
//!   node certificate ([`ClusterCa::issue`]).
//! - From then on every connection between nodes is mutual TLS with
//!   certificates from that CA ([`ClientTrust::Mutual`]).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The name every node certificate carries and every client asks for.
pub const CLUSTER_SERVER_NAME: &str = "prism.cluster";
/// The ALPN protocol id.
pub const ALPN: &[u8] = b"prism/1";

/// Certificates could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to generate or sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not parse.
    #[error("cannot parse {what}: {why}")]
    Pem {
        /// Which item.
        what: &'static str,
        /// Parser message.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
    /// A root or client verifier could not be built.
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

/// A PEM certificate and key pair, plus the CA certificate that issued it.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// This node's certificate, PEM.
    pub cert_pem: String,
    /// This node's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeIdentity { .. }")
    }
}

/// How a client decides to trust the server it dials.
#[derive(Debug, Clone)]
pub enum ClientTrust {
    /// Accept a server whose certificate chains to a CA with this SHA-256
    /// fingerprint (hex, a prefix of at least 32 digits); present no client
    /// certificate. Used to join and by token-holding clients.
    Pinned {
        /// Hex SHA-256 of the CA certificate's DER (or a prefix of it).
        ca_fingerprint: String,
    },
    /// Mutual TLS with a node certificate from the cluster CA.
    Mutual(Arc<NodeIdentity>),
}

/// The cluster's certificate authority.
pub struct ClusterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM (secret).
    pub key_pem: String,
    key: KeyPair,
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa { .. }")
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Prism cluster CA");
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key,
            issuer: cert,
        })
    }

    /// The CA saved by [`ClusterCa::generate`]. Signing needs only the CA's
    /// name and key, which are rebuilt exactly; the stored certificate is
    /// what peers trust.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = ca_params()?.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            key,
            issuer,
        })
    }

    /// Issues a certificate for a node, usable as TLS server and client.
    pub fn issue(&self, node_name: &str) -> Result<NodeIdentity, TlsError> {
        let mut p = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_name);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer, &self.key)?;
        Ok(NodeIdentity {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Hex SHA-256 of the CA certificate.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        fingerprint_pem(&self.cert_pem)
    }
}

/// Hex SHA-256 of a PEM certificate's DER bytes.
pub fn fingerprint_pem(pem: &str) -> Result<String, TlsError> {
    Ok(fingerprint_der(&cert_der(pem, "CA certificate")?))
}

fn fingerprint_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn cert_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what,
        why: e.to_string(),
    })
}

fn key_der(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "private key",
        why: e.to_string(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    store.add(cert_der(ca_pem, "CA certificate")?)?;
    Ok(Arc::new(store))
}

/// Whether a certificate `ca` issues verifies against the CA certificate
/// `cert_pem`, that is, whether `ca`'s key is that certificate's.
pub fn signed_by(ca: &ClusterCa, cert_pem: &str) -> bool {
    let check = || -> Result<(), Box<dyn std::error::Error>> {
        let node = ca.issue("identity-check")?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(cert_pem)?,
            provider(),
        )
        .build()?;
        let name = ServerName::try_from(CLUSTER_SERVER_NAME)?;
        verifier.verify_server_cert(
            &cert_der(&node.cert_pem, "node certificate")?,
            &[],
            &name,
            &[],
            UnixTime::now(),
        )?;
        Ok(())
    };
    check().is_ok()
}

/// The server side: present the node certificate (and the CA, so pinned
/// clients can check it); ask for a client certificate but also accept
/// clients without one (they must then show the token).
pub fn server_config(id: &NodeIdentity) -> Result<rustls::ServerConfig, TlsError> {
    node_server_config(id, true)
}

/// The node's server config; `tokens`: also accept clients without a
/// certificate.
fn node_server_config(id: &NodeIdentity, tokens: bool) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&id.ca_pem)?, provider());
    let verifier = if tokens {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let chain = vec![
        cert_der(&id.cert_pem, "node certificate")?,
        cert_der(&id.ca_pem, "CA certificate")?,
    ];
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der(&id.key_pem)?)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The server side of the raylets' bulk channel: as [`server_config`],
/// but a client without a node certificate from the cluster CA is refused
/// in the handshake (only raylets pull object bytes).
pub fn bulk_server_config(id: &NodeIdentity) -> Result<rustls::ServerConfig, TlsError> {
    node_server_config(id, false)
}

/// The client side for a trust mode.
pub fn client_config(trust: &ClientTrust) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut cfg = match trust {
        ClientTrust::Pinned { ca_fingerprint } => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                fingerprint: ca_fingerprint.to_ascii_lowercase(),
                provider: provider(),
            }))
            .with_no_client_auth(),
        ClientTrust::Mutual(id) => builder
            .with_root_certificates(roots(&id.ca_pem)?)
            .with_client_auth_cert(
                vec![cert_der(&id.cert_pem, "node certificate")?],
                key_der(&id.key_pem)?,
            )?,
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Trusts a server whose chain includes a CA with the pinned fingerprint,
/// and whose certificate that CA signed (full WebPKI checks against it).
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.fingerprint.len() < 32 {
            return Err(rustls::Error::General(
                "pinned CA fingerprint is too short".into(),
            ));
        }
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_der(c).starts_with(&self.fingerprint))
            .ok_or_else(|| {
                rustls::Error::General(
                    "the head's certificate authority does not match the join token (wrong token or wrong cluster)".into(),
                )
            })?;
        let mut store = RootCertStore::empty();
        store.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(store),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

    #[test]
    fn ca_reloads_and_issues_certificates_that_build_configs() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::load(&ca.cert_pem, &ca.key_pem).unwrap();
        let id = again.issue("node-a").unwrap();
        assert_eq!(id.ca_pem, ca.cert_pem);
        server_config(&id).unwrap();
        client_config(&ClientTrust::Mutual(Arc::new(id))).unwrap();
        let fp = ca.fingerprint().unwrap();
        assert_eq!(fp.len(), 64);
        client_config(&ClientTrust::Pinned { ca_fingerprint: fp }).unwrap();
    }
}

//! Ed25519 keys and signatures for the published allowlist, through `ring` (already in the tree through rustls, and
//! the implementation rustls itself trusts; no second crypto library).
//!
//! - The controller's **private key** is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), as `jpki-access keygen`
//!   or `openssl genpkey -algorithm ed25519` write it. It is mounted from a Secret into the controller's pod only.
//! - The agents' **public key** is a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`, `openssl pkey -pubout`)
//!   from the agents' own configuration, never from the API server: whoever could write the allowlist could write a
//!   key stored there too.
//!
//! PEM is read here rather than through a crate: the two shapes we accept are one base64 block each, and the
//! public key's DER is a fixed 12-byte prefix before the 32 key bytes (RFC 8410), so a general ASN.1 reader would add
//! code without adding a check.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::path::Path;

/// DER of `SubjectPublicKeyInfo { algorithm: id-Ed25519 (1.3.101.112), subjectPublicKey: BIT STRING }` before the
/// 32 key bytes (RFC 8410 §4).
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("{what}: no PEM block `-----BEGIN {label}-----`")]
    NoPem { what: String, label: &'static str },
    #[error("{what}: the PEM block is not valid base64")]
    Base64 { what: String },
    #[error("{what}: not an Ed25519 private key in PKCS#8 ({message})")]
    BadPrivateKey { what: String, message: String },
    #[error("{what}: not an Ed25519 public key (SubjectPublicKeyInfo of 44 bytes, algorithm 1.3.101.112)")]
    BadPublicKey { what: String },
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

impl KeyError {
    /// A bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            KeyError::Unreadable { .. } => "unreadable",
            KeyError::NoPem { .. } | KeyError::Base64 { .. } => "not_pem",
            KeyError::BadPrivateKey { .. } | KeyError::BadPublicKey { .. } => "not_ed25519",
            KeyError::Generate(_) => "generate",
        }
    }
}

/// Why a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature")]
    Missing,
    #[error("the signature is not base64 of 64 bytes")]
    Malformed,
    #[error("the signature does not verify with the configured public key")]
    Invalid,
}

/// The controller's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SigningKey(public {})", self.public_key().fingerprint())
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key; `what` names its origin in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, KeyError> {
        let der = pem_block(pem, "PRIVATE KEY", what)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| KeyError::BadPrivateKey { what: what.to_string(), message: e.to_string() })?;
        Ok(SigningKey { pair })
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    /// The signature of `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(message).as_ref())
    }
}

/// The public key that verifies the controller's signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, KeyError> {
        let der = pem_block(pem, "PUBLIC KEY", what)?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(key);
                Ok(PublicKey(bytes))
            }
            _ => Err(KeyError::BadPublicKey { what: what.to_string() }),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_encode("PUBLIC KEY", &der)
    }

    /// `sha256:` of the key bytes, to name a key in logs without printing it.
    pub fn fingerprint(&self) -> String {
        let digest = crate::domain::digest::digest_bytes(&self.0);
        digest[..23].to_string()
    }

    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        if signature.is_empty() {
            return Err(SignatureError::Missing);
        }
        let raw = STANDARD.decode(signature).map_err(|_| SignatureError::Malformed)?;
        if raw.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        UnparsedPublicKey::new(&ED25519, &self.0).verify(message, &raw).map_err(|_| SignatureError::Invalid)
    }
}

/// A new key pair: (private key PEM, public key PEM), for `jpki-access keygen`.
pub fn generate() -> Result<(String, String), KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let private = pem_encode("PRIVATE KEY", pkcs8.as_ref());
    let key = SigningKey::from_pem(&private, "generated key")?;
    Ok((private, key.public_key().to_pem()))
}

fn pem_block(text: &str, label: &'static str, what: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| KeyError::NoPem { what: what.to_string(), label })?;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(compact).map_err(|_| KeyError::Base64 { what: what.to_string() })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside) and `openssl pkey -pubout` of it.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINPCHjaR5Pks2WnmLOCLCRtjTUws1PD9xStlcEc8BTKF\n-----END PRIVATE KEY-----\n";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAI7ZMWmAFU5lahIh0ZDAcxOCLIgpdN756dmcdgYK40Zs=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn a_generated_key_signs_and_its_public_key_verifies() {
        let (private, public) = generate().unwrap();
        let key = SigningKey::from_pem(&private, "k").unwrap();
        let public = PublicKey::from_pem(&public, "p").unwrap();
        assert_eq!(public, key.public_key());
        let sig = key.sign(b"message");
        assert_eq!(public.verify(b"message", &sig), Ok(()));
        assert_eq!(public.verify(b"messagf", &sig), Err(SignatureError::Invalid));
        assert_eq!(public.verify(b"message", ""), Err(SignatureError::Missing));
        assert_eq!(public.verify(b"message", "not base64!"), Err(SignatureError::Malformed));
        let (_, other) = generate().unwrap();
        assert_eq!(PublicKey::from_pem(&other, "o").unwrap().verify(b"message", &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn an_openssl_key_is_read_and_its_public_key_round_trips() {
        let key = SigningKey::from_pem(OPENSSL_PRIVATE, "openssl").unwrap();
        let pem = key.public_key().to_pem();
        assert_eq!(pem, OPENSSL_PUBLIC);
        assert_eq!(PublicKey::from_pem(&pem, "p").unwrap(), key.public_key());
    }

    #[test]
    fn wrong_keys_are_refused_with_their_origin_named() {
        let err = SigningKey::from_pem("nothing", "/etc/key.pem").unwrap_err();
        assert_eq!(err.to_string(), "/etc/key.pem: no PEM block `-----BEGIN PRIVATE KEY-----`");
        let ec = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        assert_eq!(SigningKey::from_pem(ec, "ec").unwrap_err().category(), "not_ed25519");
        let rsa_spki = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n-----END PUBLIC KEY-----\n";
        assert!(matches!(PublicKey::from_pem(rsa_spki, "rsa"), Err(KeyError::BadPublicKey { .. }) | Err(KeyError::Base64 { .. })));
        assert!(format!("{:?}", SigningKey::from_pem(OPENSSL_PRIVATE, "k").unwrap()).starts_with("SigningKey(public sha256:"));
    }
}

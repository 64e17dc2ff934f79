//! The join token: `<secret>.<ca fingerprint>`.
//!
//! The secret proves a node may join; the fingerprint (the first 32 hex
//! digits of the CA certificate's SHA-256) lets the node check it is talking
//! to the right head before it sends the secret.

use std::fmt;
use std::str::FromStr;

/// A cluster's join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// 32 hex digits of randomness.
    pub secret: String,
    /// Hex prefix of the CA certificate's SHA-256.
    pub ca_fingerprint: String,
}

/// Whether two secrets (or their hashes) are equal, in time that does not
/// depend on where they differ.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token string is not of the form `<secret>.<fingerprint>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed join token: expected <32 hex digits>.<32 hex digits> as printed by `prism start --head`")]
pub struct TokenParseError;

impl JoinToken {
    /// A fresh token for a CA with this fingerprint.
    pub fn generate(ca_fingerprint: &str) -> JoinToken {
        let bytes: [u8; 16] = rand::random();
        JoinToken {
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            ca_fingerprint: ca_fingerprint.chars().take(32).collect(),
        }
    }

    /// Compares a presented secret in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        same_bytes(self.secret.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.secret, self.ca_fingerprint)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken(<secret>.{})", self.ca_fingerprint)
    }
}

impl FromStr for JoinToken {
    type Err = TokenParseError;
    fn from_str(s: &str) -> Result<JoinToken, TokenParseError> {
        let (secret, fp) = s.trim().split_once('.').ok_or(TokenParseError)?;
        let hex = |x: &str| x.len() == 32 && x.chars().all(|c| c.is_ascii_hexdigit());
        if !hex(secret) || !hex(fp) {
            return Err(TokenParseError);
        }
        Ok(JoinToken {
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }
}

/// A person's credential: `name@secret.fingerprint`. The secret proves
/// who they are (the head keeps only its SHA-256); the fingerprint pins the
/// cluster's CA, as in the join token.
#[derive(Clone, PartialEq, Eq)]
pub struct UserToken {
    /// The user's name.
    pub name: String,
    /// Their secret and the CA's fingerprint.
    pub key: JoinToken,
}

/// A user token is not of the form `name@<secret>.<fingerprint>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed user token: expected name@<32 hex digits>.<32 hex digits> as printed by `prism user add`")]
pub struct UserTokenParseError;

impl UserToken {
    /// What the token says in `Hello`: `name@secret`.
    pub fn hello(&self) -> String {
        format!("{}@{}", self.name, self.key.secret)
    }

    /// Whether `name` is a valid user name (letters, digits, `-`, `_`, 1–32).
    pub fn valid_name(name: &str) -> bool {
        (1..=32).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }
}

impl fmt::Display for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.key)
    }
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserToken({}@<secret>)", self.name)
    }
}

impl FromStr for UserToken {
    type Err = UserTokenParseError;
    fn from_str(s: &str) -> Result<UserToken, UserTokenParseError> {
        let (name, key) = s.trim().split_once('@').ok_or(UserTokenParseError)?;
        if !UserToken::valid_name(name) {
            return Err(UserTokenParseError);
        }
        Ok(UserToken {
            name: name.to_string(),
            key: key.parse().map_err(|_| UserTokenParseError)?,
        })
    }
}

/// What a client presents to the head: the cluster's join token (its
/// admin) or a person's token (`name@…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The join token.
    Join(JoinToken),
    /// A user's token.
    User(UserToken),
}

/// A credential string is neither a join token nor a user token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// It looked like a join token.
    #[error(transparent)]
    Join(#[from] TokenParseError),
    /// It looked like a user token (it has an `@`).
    #[error(transparent)]
    User(#[from] UserTokenParseError),
}

impl Credential {
    /// The fingerprint of the CA the head must present.
    pub fn ca_fingerprint(&self) -> &str {
        match self {
            Credential::Join(t) => &t.ca_fingerprint,
            Credential::User(u) => &u.key.ca_fingerprint,
        }
    }

    /// What it says in `Hello`: the join secret, or `name@secret`.
    pub fn hello(&self) -> String {
        match self {
            Credential::Join(t) => t.secret.clone(),
            Credential::User(u) => u.hello(),
        }
    }
}

impl FromStr for Credential {
    type Err = CredentialError;
    fn from_str(s: &str) -> Result<Credential, CredentialError> {
        match s.contains('@') {
            true => Ok(Credential::User(s.parse()?)),
            false => Ok(Credential::Join(s.parse()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_compares() {
        let t = JoinToken::generate(&"ab".repeat(32));
        let back: JoinToken = t.to_string().parse().unwrap();
        assert_eq!(back, t);
        assert!(t.secret_matches(&t.secret));
        assert!(!t.secret_matches("00"));
        assert!("nope".parse::<JoinToken>().is_err());
        assert!(format!("{t:?}").contains("<secret>"));
    }

    #[test]
    fn user_tokens_round_trip_and_hide_their_secret() {
        let key = JoinToken::generate(&"cd".repeat(32));
        let u = UserToken {
            name: "alice".into(),
            key: key.clone(),
        };
        let back: UserToken = u.to_string().parse().unwrap();
        assert_eq!(back, u);
        assert_eq!(u.hello(), format!("alice@{}", key.secret));
        assert!(!format!("{u:?}").contains(&key.secret));
        for bad in ["alice", "@x.y", "al ice@00.00", &key.to_string()] {
            assert!(bad.parse::<UserToken>().is_err(), "{bad}");
        }
        assert_eq!(u.to_string().parse(), Ok(Credential::User(u.clone())));
        assert_eq!(key.to_string().parse(), Ok(Credential::Join(key.clone())));
        assert!("bob@nope".parse::<Credential>().is_err());
    }
}

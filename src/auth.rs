//! Credentials and tokens: a users file of argon2id hashes, HS256 JWTs, and the bearer filter.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::ApiError;

/// Why the users file could not be used or changed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a users file.
    #[error("{path}: invalid users file: {problem}")]
    Invalid { path: PathBuf, problem: String },
    /// The requested change does not apply.
    #[error("{path}: {problem}")]
    Rejected { path: PathBuf, problem: String },
}

/// The users file: usernames to argon2id PHC strings, never plain passwords.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Users {
    users: BTreeMap<String, String>,
}

impl Users {
    /// Reads `path`; a missing file is an empty set of users.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(UsersError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let users: Users = serde_json::from_slice(&bytes).map_err(|e| UsersError::Invalid {
            path: path.into(),
            problem: e.to_string(),
        })?;
        for (name, hash) in &users.users {
            PasswordHash::new(hash).map_err(|e| UsersError::Invalid {
                path: path.into(),
                problem: format!("user `{name}`: not a password hash ({e})"),
            })?;
        }
        Ok(users)
    }

    /// Writes the users atomically, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| UsersError::Invalid {
            path: path.into(),
            problem: e.to_string(),
        })?;
        write_atomic(path, |f| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            f.write_all(&json)?;
            f.write_all(b"\n")
        })
        .map_err(|source| UsersError::Io {
            path: path.into(),
            source,
        })
    }

    /// Whether there is no user at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Usernames, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Adds a user or replaces their password.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), String> {
        validate_username(name)?;
        if password.is_empty() {
            return Err("password must not be empty".into());
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| e.to_string())?;
        self.users.insert(name.to_string(), hash.to_string());
        Ok(())
    }

    /// Removes a user; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    /// Checks a password. Unknown users cost the same argon2 work as known ones, so response
    /// time does not reveal which usernames exist.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let stored = self.users.get(name).map(String::as_str);
        let hash = stored.unwrap_or(dummy_hash());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && stored.is_some()
    }
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"no such user", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Usernames are printable, without spaces or colons, at most 64 bytes.
pub fn validate_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("username must be 1 to 64 characters".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err("username must not contain spaces, control characters or ':'".into());
    }
    Ok(())
}

/// A random password for the first-run user: 20 characters from an unambiguous alphabet.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// JWT claims: subject, issued-at and expiry, in seconds since the epoch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// Issued at.
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
}

/// Issues and verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps key material.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// 32 random bytes: tokens signed with it die with the process.
    pub fn random() -> Self {
        let mut b = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self(b)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    /// Tokens signed with `secret`, valid for `ttl_secs`.
    pub fn new(secret: &Secret, ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        // Clocks of one server agree with themselves; a small leeway only covers rounding.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
            ttl_secs,
        }
    }

    /// Lifetime of new tokens, seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A signed token for `user`.
    pub fn issue(&self, user: &str) -> Result<String, ApiError> {
        let iat = now();
        let claims = Claims {
            sub: user.to_string(),
            iat,
            exp: iat + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails) and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::ExpiredToken,
                ErrorKind::InvalidSignature => ApiError::InvalidToken("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    ApiError::InvalidToken("algorithm must be HS256".into())
                }
                _ => ApiError::InvalidToken(format!("malformed token ({e})")),
            })
    }

    /// Extracts and verifies the token of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, ApiError> {
        let value = header.ok_or(ApiError::MissingToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingToken);
        }
        self.verify(token.trim())
    }
}

/// Shared authentication state: users, tokens, and whether auth is on.
#[derive(Debug)]
pub struct Auth {
    /// Known users (empty when auth is off).
    pub users: Users,
    /// Token issuer and verifier.
    pub tokens: Tokens,
    /// False with `--no-auth`: `/predict` then needs no token.
    pub required: bool,
}

/// Shared handle to [`Auth`].
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&Secret::new(b"test secret".to_vec()), 60)
    }

    #[test]
    fn password_round_trip_and_wrong_password() {
        let mut u = Users::default();
        u.set_password("alice", "correct horse").unwrap();
        assert!(u.verify("alice", "correct horse"));
        assert!(!u.verify("alice", "wrong"));
        assert!(!u.verify("bob", "correct horse"));
        let stored = &u.users["alice"];
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
    }

    #[test]
    fn users_file_round_trip_and_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        assert!(Users::load(&path).unwrap().is_empty());
        let mut u = Users::default();
        u.set_password("alice", "pw").unwrap();
        u.save(&path).unwrap();
        assert_eq!(Users::load(&path).unwrap(), u);
        std::fs::write(&path, r#"{"users":{"eve":"plaintext"}}"#).unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("user `eve`: not a password hash"), "{e}");
        std::fs::write(&path, "nope").unwrap();
        assert!(Users::load(&path)
            .unwrap_err()
            .to_string()
            .contains("invalid users file"));
    }

    #[test]
    fn bad_usernames_and_empty_passwords_are_refused() {
        let mut u = Users::default();
        assert!(u.set_password("", "x").is_err());
        assert!(u.set_password("a b", "x").is_err());
        assert!(u.set_password("a:b", "x").is_err());
        assert!(u.set_password("alice", "").is_err());
    }

    #[test]
    fn token_round_trip() {
        let t = tokens();
        let tok = t.issue("alice").unwrap();
        let claims = t.verify(&tok).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp - claims.iat, 60);
        assert_eq!(
            t.verify_header(Some(&format!("Bearer {tok}"))).unwrap().sub,
            "alice"
        );
    }

    #[test]
    fn rejects_other_secret_expired_none_and_garbage() {
        let t = tokens();
        let other = Tokens::new(&Secret::new(b"other".to_vec()), 60);
        let forged = other.issue("alice").unwrap();
        assert!(matches!(t.verify(&forged), Err(ApiError::InvalidToken(_))));

        let old = Claims {
            sub: "alice".into(),
            iat: now() - 7200,
            exp: now() - 3600,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &old,
            &EncodingKey::from_secret(b"test secret"),
        )
        .unwrap();
        assert!(matches!(t.verify(&expired), Err(ApiError::ExpiredToken)));

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "a".into(),
                iat: now(),
                exp: now() + 60,
            },
            &EncodingKey::from_secret(b"test secret"),
        )
        .unwrap();
        assert!(matches!(t.verify(&hs512), Err(ApiError::InvalidToken(_))));

        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(
                r#"{{"sub":"alice","iat":{},"exp":{}}}"#,
                now(),
                now() + 60
            ))
        );
        assert!(matches!(t.verify(&none), Err(ApiError::InvalidToken(_))));
        assert!(matches!(
            t.verify("garbage"),
            Err(ApiError::InvalidToken(_))
        ));
        assert!(matches!(t.verify_header(None), Err(ApiError::MissingToken)));
        assert!(matches!(
            t.verify_header(Some("Basic abc")),
            Err(ApiError::MissingToken)
        ));
    }
}

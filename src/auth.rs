//! Credentials and tokens: a users file of argon2id hashes, HS256 JWTs, and the bearer filter.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    /// A short fingerprint of `name`'s stored hash, or `None` if there is no such user. Tokens
    /// carry it so that a password change revokes every token issued before it. It reveals
    /// nothing usable: the stored hash's salt is not in it, so it cannot test guesses.
    pub fn fingerprint(&self, name: &str) -> Option<String> {
        use base64::Engine;
        let hash = self.users.get(name)?;
        let digest = Sha256::digest(hash.as_bytes());
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
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

/// What our tokens carry: the claims plus `pwd`, the [`Users::fingerprint`] of `sub` at issue
/// time, which ties the token to that password.
#[derive(Serialize, Deserialize)]
struct Bound {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pwd: Option<String>,
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
        // We never issue `nbf`, but a token that says "not yet" must not be taken as "now".
        validation.validate_nbf = true;
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

    /// A signed token for `user` without a password fingerprint: [`Tokens::verify`] accepts
    /// it, [`Auth::authorize`] does not. Servers issue through [`Auth::issue`].
    pub fn issue(&self, user: &str) -> Result<String, ApiError> {
        self.issue_with(user, None)
    }

    /// A signed token for `user` carrying the fingerprint of their stored password hash.
    pub fn issue_with(&self, user: &str, fingerprint: Option<String>) -> Result<String, ApiError> {
        let iat = now();
        let token = Bound {
            claims: Claims {
                sub: user.to_string(),
                iat,
                exp: iat + self.ttl_secs,
            },
            pwd: fingerprint,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &token, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails), expiry, not-before, and
    /// that the header demands no extension we do not implement (`crit`, RFC 7515 §4.1.11).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_bound(token).map(|b| b.claims)
    }

    fn verify_bound(&self, token: &str) -> Result<Bound, ApiError> {
        let claims = jsonwebtoken::decode::<Bound>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::ExpiredToken,
                ErrorKind::ImmatureSignature => {
                    ApiError::InvalidToken("not valid yet (`nbf` is in the future)".into())
                }
                ErrorKind::InvalidSignature => ApiError::InvalidToken("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    ApiError::InvalidToken("algorithm must be HS256".into())
                }
                _ => ApiError::InvalidToken(format!("malformed token ({e})")),
            })?;
        if header_has_crit(token) {
            return Err(ApiError::InvalidToken(
                "header parameter `crit` names extensions this server does not support".into(),
            ));
        }
        Ok(claims)
    }

    /// Extracts and verifies the token of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, ApiError> {
        self.verify_header_bound(header).map(|b| b.claims)
    }

    fn verify_header_bound(&self, header: Option<&str>) -> Result<Bound, ApiError> {
        let value = header.ok_or(ApiError::MissingToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingToken);
        }
        self.verify_bound(token.trim())
    }
}

/// Whether the token's JOSE header has a `crit` member. jsonwebtoken's `Header` drops unknown
/// members, so the header is read again here; we implement no extension, so any `crit` at all
/// must be refused. Only called on tokens whose signature already verified.
fn header_has_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.get("crit").is_some())
}

/// How often at most the users file is looked at for changes, from the requests that need it.
pub const USERS_RECHECK: Duration = Duration::from_millis(250);

/// What identifies one version of the users file without reading it. Every change the CLI makes
/// renames a new file into place, which changes the inode; editors that rewrite in place change
/// the size or the modification time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FileStamp {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            #[cfg(unix)]
            dev: meta.dev(),
            #[cfg(unix)]
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// The users file as last read, swapped atomically when the file changes.
#[derive(Debug)]
pub struct UsersStore {
    current: ArcSwap<Users>,
    watched: Option<Watched>,
}

#[derive(Debug)]
struct Watched {
    path: PathBuf,
    started: Instant,
    last_check_ms: AtomicU64,
    /// The version of the file last looked at, good or bad (`None`: missing), so a broken file
    /// is reported once, not on every check.
    seen: Mutex<Option<FileStamp>>,
}

impl UsersStore {
    /// Users that never change (tests, `--no-auth`).
    pub fn fixed(users: Users) -> Self {
        Self {
            current: ArcSwap::from_pointee(users),
            watched: None,
        }
    }

    /// `users`, just read from `path`, kept up to date with it.
    pub fn watch(path: &Path, users: Users) -> Self {
        let seen = std::fs::metadata(path).ok().map(|m| FileStamp::of(&m));
        Self {
            current: ArcSwap::from_pointee(users),
            watched: Some(Watched {
                path: path.to_path_buf(),
                started: Instant::now(),
                last_check_ms: AtomicU64::new(0),
                seen: Mutex::new(seen),
            }),
        }
    }

    /// The current users, at most [`USERS_RECHECK`] behind the file.
    pub fn get(&self) -> Arc<Users> {
        if let Some(w) = &self.watched {
            self.recheck(w);
        }
        self.current.load_full()
    }

    /// One `stat` per [`USERS_RECHECK`] at most, on whichever request comes first; a read and
    /// parse only when the file changed. Done inline: both are microseconds for a users file,
    /// cheaper than a thread or a task that polls while nobody logs in.
    fn recheck(&self, w: &Watched) {
        let now = w.started.elapsed().as_millis() as u64;
        let last = w.last_check_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < USERS_RECHECK.as_millis() as u64 {
            return;
        }
        if w.last_check_ms
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Ok(mut seen) = w.seen.try_lock() else {
            return;
        };
        let stamp = match std::fs::metadata(&w.path) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %w.path.display(), error = %e, "cannot stat the users file; keeping the users already loaded");
                return;
            }
        };
        if stamp == *seen {
            return;
        }
        *seen = stamp;
        if stamp.is_none() {
            // Start-up would make a fresh `admin` here, not "nobody": rather than guess, keep
            // the last users until a file is back.
            tracing::warn!(path = %w.path.display(), "users file is gone; keeping the users already loaded");
            return;
        }
        match Users::load(&w.path) {
            Ok(users) => {
                tracing::info!(path = %w.path.display(), users = users.users.len(), "users file reloaded");
                self.current.store(Arc::new(users));
            }
            Err(e) => {
                tracing::warn!(error = %e, "users file changed but is unusable; keeping the users already loaded");
            }
        }
    }
}

/// Shared authentication state: users, tokens, and whether auth is on.
#[derive(Debug)]
pub struct Auth {
    /// Known users (empty when auth is off), reloaded when their file changes.
    pub users: UsersStore,
    /// Token issuer and verifier.
    pub tokens: Tokens,
    /// False with `--no-auth`: `/predict` then needs no token.
    pub required: bool,
}

impl Auth {
    /// A token for `user`, bound to their current password.
    pub fn issue(&self, user: &str) -> Result<String, ApiError> {
        let fingerprint = self.users.get().fingerprint(user);
        self.tokens.issue_with(user, fingerprint)
    }

    /// Verifies the bearer token of an `Authorization` header value, then that its user still
    /// exists with the password it had when the token was issued.
    pub fn authorize(&self, header: Option<&str>) -> Result<Claims, ApiError> {
        let token = self.tokens.verify_header_bound(header)?;
        match self.users.get().fingerprint(&token.claims.sub) {
            None => Err(ApiError::TokenRevoked("its user does not exist (any more)")),
            Some(fp) if token.pwd.as_deref() != Some(fp.as_str()) => Err(ApiError::TokenRevoked(
                "the password changed after it was issued",
            )),
            Some(_) => Ok(token.claims),
        }
    }
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

    /// A token with a hand-written header and claims, correctly signed with the test secret.
    fn signed(header: &str, claims: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let key = EncodingKey::from_secret(b"test secret");
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    }

    #[test]
    fn refuses_a_token_not_valid_yet() {
        let t = tokens();
        let tok = signed(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(
                r#"{{"sub":"alice","iat":{},"exp":{},"nbf":{}}}"#,
                now(),
                now() + 600,
                now() + 300
            ),
        );
        let e = t.verify(&tok).unwrap_err();
        assert!(
            matches!(&e, ApiError::InvalidToken(m) if m.contains("nbf")),
            "{e:?}"
        );
        // The same token without `nbf` is fine, so it is `nbf` that was refused.
        let ok = signed(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(r#"{{"sub":"alice","iat":{},"exp":{}}}"#, now(), now() + 600),
        );
        t.verify(&ok).unwrap();
    }

    #[test]
    fn refuses_critical_header_extensions() {
        let t = tokens();
        let claims = format!(r#"{{"sub":"alice","iat":{},"exp":{}}}"#, now(), now() + 600);
        for header in [
            r#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#,
            r#"{"alg":"HS256","crit":[]}"#,
        ] {
            let e = t.verify(&signed(header, &claims)).unwrap_err();
            assert!(
                matches!(&e, ApiError::InvalidToken(m) if m.contains("crit")),
                "{header}: {e:?}"
            );
        }
        t.verify(&signed(r#"{"alg":"HS256","kid":"k"}"#, &claims))
            .unwrap();
    }

    fn auth_with(users: Users) -> Auth {
        Auth {
            users: UsersStore::fixed(users),
            tokens: tokens(),
            required: true,
        }
    }

    #[test]
    fn authorize_wants_an_existing_user_with_an_unchanged_password() {
        let mut users = Users::default();
        users.set_password("alice", "pw").unwrap();
        let auth = auth_with(users.clone());
        let tok = auth.issue("alice").unwrap();
        let header = format!("Bearer {tok}");
        assert_eq!(auth.authorize(Some(&header)).unwrap().sub, "alice");

        // A genuine signature over a user who does not exist.
        let ghost = auth.tokens.issue_with("ghost", Some("x".into())).unwrap();
        let e = auth
            .authorize(Some(&format!("Bearer {ghost}")))
            .unwrap_err();
        assert!(matches!(e, ApiError::TokenRevoked(_)), "{e:?}");
        // A token without a fingerprint.
        let bare = auth.tokens.issue("alice").unwrap();
        let e = auth.authorize(Some(&format!("Bearer {bare}"))).unwrap_err();
        assert!(matches!(e, ApiError::TokenRevoked(_)), "{e:?}");

        users.set_password("alice", "pw").unwrap();
        auth.users.current.store(Arc::new(users.clone()));
        let e = auth.authorize(Some(&header)).unwrap_err();
        assert!(
            matches!(e, ApiError::TokenRevoked(m) if m.contains("password")),
            "same password, new salt: still a change"
        );
        users.remove("alice");
        auth.users.current.store(Arc::new(users));
        let e = auth.authorize(Some(&header)).unwrap_err();
        assert!(matches!(e, ApiError::TokenRevoked(m) if m.contains("exist")));
    }

    #[test]
    fn the_store_follows_the_file_and_keeps_the_last_good_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let mut users = Users::default();
        users.set_password("alice", "pw").unwrap();
        users.save(&path).unwrap();
        let store = UsersStore::watch(&path, Users::load(&path).unwrap());
        assert!(store.get().contains("alice"));

        let wait_for = |want: &dyn Fn(&Users) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !want(&store.get()) {
                assert!(Instant::now() < deadline, "store never caught up");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        users.set_password("bob", "pw").unwrap();
        users.save(&path).unwrap();
        wait_for(&|u| u.contains("bob"));

        std::fs::write(&path, "{broken").unwrap();
        // A broken file is looked at (its stamp recorded) yet changes nothing.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(store.get().contains("bob"));
            let seen = *store.watched.as_ref().unwrap().seen.lock().unwrap();
            let now = std::fs::metadata(&path).map(|m| FileStamp::of(&m)).ok();
            if seen == now {
                break;
            }
            assert!(Instant::now() < deadline, "broken file never looked at");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(store.get().contains("alice") && store.get().contains("bob"));

        users.remove("alice");
        users.save(&path).unwrap();
        wait_for(&|u| !u.contains("alice") && u.contains("bob"));
    }
}

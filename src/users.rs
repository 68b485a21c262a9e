//! The users file: usernames to argon2id hashes, kept up to date while the server runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomic;

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
}

/// Why a username or password cannot go into the users file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Empty or longer than 64 bytes.
    #[error("username must be 1 to 64 characters")]
    NameLength,
    /// Would be ambiguous in logs or in `user:password` notation.
    #[error("username must not contain spaces, control characters or ':'")]
    NameCharacters,
    /// An empty password would let anyone in.
    #[error("password must not be empty")]
    EmptyPassword,
    /// argon2 refused its inputs (never seen with the default parameters).
    #[error("hashing the password failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// The users file: usernames to argon2id PHC strings, never plain passwords.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Users {
    users: BTreeMap<String, String>,
    /// Users who may also change what the server serves (reload the model).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    admins: BTreeSet<String>,
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
        if let Some(name) = users.admins.iter().find(|a| !users.users.contains_key(*a)) {
            return Err(UsersError::Invalid {
                path: path.into(),
                problem: format!("admin `{name}` is not a user"),
            });
        }
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
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), CredentialError> {
        validate_username(name)?;
        if password.is_empty() {
            return Err(CredentialError::EmptyPassword);
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(CredentialError::Hash)?;
        self.users.insert(name.to_string(), hash.to_string());
        Ok(())
    }

    /// Removes a user; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.admins.remove(name);
        self.users.remove(name).is_some()
    }

    /// Grants or withdraws the admin right of an existing user; false if there is no such user.
    pub fn set_admin(&mut self, name: &str, admin: bool) -> bool {
        if !self.users.contains_key(name) {
            return false;
        }
        if admin {
            self.admins.insert(name.to_string());
        } else {
            self.admins.remove(name);
        }
        true
    }

    /// Whether `name` exists and is an admin.
    pub fn is_admin(&self, name: &str) -> bool {
        self.admins.contains(name) && self.users.contains_key(name)
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
pub fn validate_username(name: &str) -> Result<(), CredentialError> {
    if name.is_empty() || name.len() > 64 {
        return Err(CredentialError::NameLength);
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(CredentialError::NameCharacters);
    }
    Ok(())
}

/// A random password for the first-run user: 20 characters from an unambiguous alphabet,
/// each drawn uniformly (`choose` rejects the draws a modulo would bias).
pub fn random_password() -> String {
    use rand::seq::SliceRandom;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| *ALPHABET.choose(&mut rng).unwrap_or(&b'x') as char)
        .collect()
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

    /// Replaces the users as a reload would.
    #[cfg(test)]
    pub(crate) fn replace(&self, users: Users) {
        self.current.store(Arc::new(users));
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn admins_are_users_and_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let mut u = Users::default();
        assert!(!u.set_admin("alice", true), "no such user yet");
        u.set_password("alice", "pw").unwrap();
        u.set_password("bob", "pw").unwrap();
        assert!(u.set_admin("alice", true));
        u.save(&path).unwrap();
        let back = Users::load(&path).unwrap();
        assert!(back.is_admin("alice") && !back.is_admin("bob"));
        u.remove("alice");
        assert!(!u.is_admin("alice"));
        std::fs::write(&path, r#"{"users":{},"admins":["ghost"]}"#).unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("admin `ghost` is not a user"), "{e}");
    }

    #[test]
    fn random_passwords_use_the_whole_alphabet_and_differ() {
        let a = random_password();
        assert_eq!(a.len(), 20);
        assert_ne!(a, random_password());
        let seen: std::collections::BTreeSet<char> = (0..200)
            .flat_map(|_| random_password().chars().collect::<Vec<_>>())
            .collect();
        assert_eq!(
            seen.len(),
            57,
            "every one of the 57 characters turns up in 4,000 draws"
        );
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

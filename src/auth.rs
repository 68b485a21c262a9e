//! Authentication: tokens checked against the users file as it is now.

pub use crate::tokens::{Claims, Secret, TokenError, Tokens};
pub use crate::users::{Users, UsersStore};

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
    pub fn issue(&self, user: &str) -> Result<String, TokenError> {
        let fingerprint = self.users.get().fingerprint(user);
        self.tokens.issue_with(user, fingerprint)
    }

    /// Verifies the bearer token of an `Authorization` header value, then that its user still
    /// exists with the password it had when the token was issued.
    pub fn authorize(&self, header: Option<&str>) -> Result<Claims, TokenError> {
        let token = self.tokens.verify_header_bound(header)?;
        match self.users.get().fingerprint(&token.claims.sub) {
            None => Err(TokenError::Revoked("its user does not exist (any more)")),
            Some(fp) if token.pwd.as_deref() != Some(fp.as_str()) => Err(TokenError::Revoked(
                "the password changed after it was issued",
            )),
            Some(_) => Ok(token.claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&Secret::new(b"test secret".to_vec()), 60)
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
        assert!(matches!(e, TokenError::Revoked(_)), "{e:?}");
        // A token without a fingerprint.
        let bare = auth.tokens.issue("alice").unwrap();
        let e = auth.authorize(Some(&format!("Bearer {bare}"))).unwrap_err();
        assert!(matches!(e, TokenError::Revoked(_)), "{e:?}");

        users.set_password("alice", "pw").unwrap();
        auth.users.replace(users.clone());
        let e = auth.authorize(Some(&header)).unwrap_err();
        assert!(
            matches!(e, TokenError::Revoked(m) if m.contains("password")),
            "same password, new salt: still a change"
        );
        users.remove("alice");
        auth.users.replace(users);
        let e = auth.authorize(Some(&header)).unwrap_err();
        assert!(matches!(e, TokenError::Revoked(m) if m.contains("exist")));
    }
}

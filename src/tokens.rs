//! Bearer tokens: HS256 JWTs bound to the password they were issued for.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Why a request's token is not accepted, or a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send `Authorization: Bearer <access_token>` from /login")]
    Missing,
    /// The token failed verification; says which check.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token was valid but has expired.
    #[error("token expired: log in again")]
    Expired,
    /// A genuine token whose user was removed or changed password after it was issued.
    #[error("token revoked: {0}; log in again")]
    Revoked(&'static str),
    /// Signing failed: a bug or a broken key, never the caller's doing.
    #[error("signing a token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
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
pub(crate) struct Bound {
    #[serde(flatten)]
    pub(crate) claims: Claims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pwd: Option<String>,
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
    pub fn issue(&self, user: &str) -> Result<String, TokenError> {
        self.issue_with(user, None)
    }

    /// A signed token for `user` carrying the fingerprint of their stored password hash.
    pub fn issue_with(
        &self,
        user: &str,
        fingerprint: Option<String>,
    ) -> Result<String, TokenError> {
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
            .map_err(TokenError::Sign)
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails), expiry, not-before, and
    /// that the header demands no extension we do not implement (`crit`, RFC 7515 §4.1.11).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_bound(token).map(|b| b.claims)
    }

    fn verify_bound(&self, token: &str) -> Result<Bound, TokenError> {
        let claims = jsonwebtoken::decode::<Bound>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => {
                    TokenError::Invalid("not valid yet (`nbf` is in the future)".into())
                }
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Invalid("algorithm must be HS256".into())
                }
                _ => TokenError::Invalid(format!("malformed token ({e})")),
            })?;
        if header_has_crit(token) {
            return Err(TokenError::Invalid(
                "header parameter `crit` names extensions this server does not support".into(),
            ));
        }
        Ok(claims)
    }

    /// Extracts and verifies the token of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, TokenError> {
        self.verify_header_bound(header).map(|b| b.claims)
    }

    pub(crate) fn verify_header_bound(&self, header: Option<&str>) -> Result<Bound, TokenError> {
        let value = header.ok_or(TokenError::Missing)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&Secret::new(b"test secret".to_vec()), 60)
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
        assert!(matches!(t.verify(&forged), Err(TokenError::Invalid(_))));

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
        assert!(matches!(t.verify(&expired), Err(TokenError::Expired)));

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
        assert!(matches!(t.verify(&hs512), Err(TokenError::Invalid(_))));

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
        assert!(matches!(t.verify(&none), Err(TokenError::Invalid(_))));
        assert!(matches!(t.verify("garbage"), Err(TokenError::Invalid(_))));
        assert!(matches!(t.verify_header(None), Err(TokenError::Missing)));
        assert!(matches!(
            t.verify_header(Some("Basic abc")),
            Err(TokenError::Missing)
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
            matches!(&e, TokenError::Invalid(m) if m.contains("nbf")),
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
                matches!(&e, TokenError::Invalid(m) if m.contains("crit")),
                "{header}: {e:?}"
            );
        }
        t.verify(&signed(r#"{"alg":"HS256","kid":"k"}"#, &claims))
            .unwrap();
    }
}

//! Access tokens: HS256 JWTs signed with a key the server generates on its
//! first start and keeps in the database (so every replica verifies them).

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer every token names.
pub const ISSUER: &str = "fleetban";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    pub uid: i64,
    pub role: String,
    /// The session (login) that issued it; logout revokes it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
}

pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Self {
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// Checks signature, issuer and expiry against `now` (no leeway).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked below against the caller's clock.
        v.validate_exp = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            uid: 1,
            role: "admin".into(),
            sid: "s".into(),
            iat: 0,
            exp,
            iss: ISSUER.into(),
        }
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let k = Keys::new(b"0123456789abcdef0123456789abcdef");
        let now = Utc.timestamp_opt(1000, 0).single().expect("time");
        let t = k.sign(&claims(1100)).expect("sign");
        assert_eq!(k.verify(&t, now), Ok(claims(1100)));
        let later = Utc.timestamp_opt(1100, 0).single().expect("time");
        assert_eq!(k.verify(&t, later), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let k = Keys::new(b"0123456789abcdef0123456789abcdef");
        let other = Keys::new(b"another key, another key, anothe");
        let now = Utc.timestamp_opt(1000, 0).single().expect("time");
        let t = other.sign(&claims(2000)).expect("sign");
        assert_eq!(k.verify(&t, now), Err(TokenError::Invalid));
        let mut t = k.sign(&claims(2000)).expect("sign");
        t.insert(t.len() - 3, 'x');
        assert_eq!(k.verify(&t, now), Err(TokenError::Invalid));
        assert_eq!(k.verify("garbage", now), Err(TokenError::Invalid));
        // "alg": "none" is refused.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsInVpZCI6MSwicm9sZSI6ImFkbWluIiwic2lkIjoicyIsImlhdCI6MCwiZXhwIjoyMDAwLCJpc3MiOiJmbGVldGJhbiJ9.";
        assert_eq!(k.verify(none, now), Err(TokenError::Invalid));
    }
}

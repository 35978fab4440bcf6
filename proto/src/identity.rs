//! The enrollment token as operators pass it around, shared by the server
//! (which prints it) and the agent (which reads it). A token carries a
//! random secret and the SHA-256 fingerprint of the server's CA, so an agent
//! can trust the CA on first contact without any other input:
//!
//! ```text
//! fbt1_<secret: 64 hex digits>_<CA fingerprint: 64 hex digits>
//! ```

use std::fmt;

const PREFIX: &str = "fbt1_";

/// A token or a fingerprint is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed enrollment token: expected fbt1_<64 hex digits>_<64 hex digits>, as printed by `fleetban-server token create`")]
    Token,
    #[error(
        "malformed CA fingerprint {0:?}: expected a SHA-256 as 64 hex digits (colons allowed)"
    )]
    Fingerprint(String),
}

/// An enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// 64 lowercase hex digits.
    pub secret: String,
    /// SHA-256 of the CA certificate (DER), 64 lowercase hex digits.
    pub ca_fingerprint: String,
}

impl EnrollmentToken {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let rest = s.trim().strip_prefix(PREFIX).ok_or(TokenError::Token)?;
        let (secret, fp) = rest.split_once('_').ok_or(TokenError::Token)?;
        if !is_sha256_hex(secret) || !is_sha256_hex(fp) {
            return Err(TokenError::Token);
        }
        Ok(EnrollmentToken {
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_{}", self.secret, self.ca_fingerprint)
    }
}

/// The secret stays out of debug output and logs.
impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("secret", &"***")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

/// A SHA-256 fingerprint as operators write it (`AB:CD:…`, `abcd…`, with or
/// without a `sha256:` prefix), as 64 lowercase hex digits.
pub fn parse_fingerprint(s: &str) -> Result<String, TokenError> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|&c| c != ':').collect();
    if is_sha256_hex(&hex) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(TokenError::Fingerprint(s.to_owned()))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    #[test]
    fn tokens_round_trip() {
        let t = EnrollmentToken {
            secret: A.into(),
            ca_fingerprint: B.into(),
        };
        let s = t.to_string();
        assert_eq!(s, format!("fbt1_{A}_{B}"));
        assert_eq!(EnrollmentToken::parse(&format!(" {s}\n")), Ok(t.clone()));
        assert!(!format!("{t:?}").contains(A), "the secret is not printed");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "fbt1_",
            &format!("fbt2_{A}_{B}"),
            &format!("fbt1_{A}"),
            &format!("fbt1_{A}_{}", &B[1..]),
            &format!("fbt1_{A}_{}x", &B[1..]),
            &format!("fbt1_{A}_{B}_{A}"),
        ] {
            assert_eq!(EnrollmentToken::parse(bad), Err(TokenError::Token), "{bad}");
        }
    }

    #[test]
    fn fingerprints_in_common_spellings() {
        let colons = A
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).as_deref(), Ok(A));
        assert_eq!(parse_fingerprint(&format!("sha256:{A}")).as_deref(), Ok(A));
        assert!(matches!(
            parse_fingerprint("abcd"),
            Err(TokenError::Fingerprint(_))
        ));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}

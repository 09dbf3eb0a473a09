//! Signed tokens: claims that a secret's holder vouches for, checked without a database.
//!
//! A token is `cst1.<claims>.<mac>`: the claims postcard-encoded, the HMAC-SHA256 of
//! `cst1.` and the claims under the server's secret, both in lowercase hex. Anyone holding
//! the secret can make tokens (`crdt-sync token`); a token cannot be altered without it.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{AuthDecision, AuthRequest, Authenticator, Identity, Permission};

const PREFIX: &str = "cst1.";
/// Shorter secrets are refused: a token is only as strong as the secret behind it.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest token accepted; checked before decoding anything.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenClaims {
    /// Who holds it (for logs and events).
    pub subject: String,
    /// The documents it opens: names, or prefixes ending in `*`. Others are denied.
    pub documents: Vec<String>,
    /// Receive only.
    pub read_only: bool,
    /// Seconds since the Unix epoch after which the token is refused (`None`: never).
    pub expires_unix: Option<u64>,
}

impl TokenClaims {
    /// `subject` may read and write `documents`, for ever.
    pub fn new(subject: impl Into<String>, documents: Vec<String>) -> Self {
        TokenClaims { subject: subject.into(), documents, read_only: false, expires_unix: None }
    }

    /// Make the token read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Refuse the token after `unix_secs`.
    pub fn expiring_at(mut self, unix_secs: u64) -> Self {
        self.expires_unix = Some(unix_secs);
        self
    }
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The secret is too short to sign with.
    #[error("the secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    /// Not a token of this format.
    #[error("not a crdt-sync token")]
    Malformed,
    /// The signature does not match: altered, or signed with another secret.
    #[error("bad token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

type HmacSha256 = Hmac<Sha256>;

fn mac_of(secret: &[u8], claims: &[u8]) -> Result<HmacSha256, TokenError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(TokenError::WeakSecret);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::WeakSecret)?;
    mac.update(PREFIX.as_bytes());
    mac.update(claims);
    Ok(mac)
}

/// Sign `claims` with `secret` (at least [`MIN_SECRET_BYTES`] bytes).
pub fn sign_token(secret: &[u8], claims: &TokenClaims) -> Result<String, TokenError> {
    let body = postcard::to_allocvec(claims).map_err(|_| TokenError::Malformed)?;
    let tag = mac_of(secret, &body)?.finalize().into_bytes();
    Ok(format!("{PREFIX}{}.{}", hex(&body), hex(&tag)))
}

/// Check `token` against `secret` at `now_unix` (seconds since the Unix epoch) and read
/// its claims. The signature is checked before the claims are decoded, in constant time.
pub fn verify_token(secret: &[u8], token: &[u8], now_unix: u64) -> Result<TokenClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
    let rest = token.trim().strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (body, tag) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let body = unhex(body).ok_or(TokenError::Malformed)?;
    let tag = unhex(tag).ok_or(TokenError::Malformed)?;
    mac_of(secret, &body)?.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
    let claims: TokenClaims = match postcard::take_from_bytes(&body) {
        Ok((claims, [])) => claims,
        _ => return Err(TokenError::Malformed),
    };
    if claims.expires_unix.is_some_and(|at| now_unix >= at) {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// An [`Authenticator`] for signed tokens ([`sign_token`]): the token's documents get
/// read-write (or read-only) access, every other document is denied, and the identity
/// expires with the token.
///
/// The core has no wall clock: the authenticator is given the Unix time once, with the
/// `Instant` it corresponds to, and counts from there with the `now` it is called with.
#[derive(Clone)]
pub struct HmacAuthenticator {
    secret: Vec<u8>,
    anchor: Instant,
    anchor_unix: u64,
}

impl std::fmt::Debug for HmacAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in logs.
        f.debug_struct("HmacAuthenticator").field("anchor_unix", &self.anchor_unix).finish_non_exhaustive()
    }
}

impl HmacAuthenticator {
    /// Check tokens signed with `secret`; `now` is the same moment as `now_unix` (seconds
    /// since the Unix epoch).
    pub fn new(secret: impl Into<Vec<u8>>, now: Instant, now_unix: u64) -> Result<Self, TokenError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::WeakSecret);
        }
        Ok(HmacAuthenticator { secret, anchor: now, anchor_unix: now_unix })
    }

    fn unix_at(&self, now: Instant) -> u64 {
        self.anchor_unix + now.saturating_duration_since(self.anchor).as_secs()
    }
}

impl Authenticator for HmacAuthenticator {
    fn authenticate(&mut self, now: Instant, request: &AuthRequest<'_>) -> AuthDecision {
        let claims = match verify_token(&self.secret, request.token, self.unix_at(now)) {
            Ok(claims) => claims,
            Err(e) => return AuthDecision::Reject(e.to_string()),
        };
        let access = if claims.read_only { Permission::ReadOnly } else { Permission::ReadWrite };
        let mut identity = Identity::new(claims.subject).with_default(Permission::Denied);
        for pattern in claims.documents {
            identity = identity.with_rule(pattern, access);
        }
        if let Some(at) = claims.expires_unix {
            let left = at.saturating_sub(self.unix_at(now));
            identity = identity.with_expiry(now + Duration::from_secs(left));
        }
        AuthDecision::Accept(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionId, PeerId};

    const SECRET: &[u8] = b"0123456789abcdef-test-secret";

    fn request(token: &[u8]) -> AuthRequest<'_> {
        AuthRequest { connection: ConnectionId(0), peer: PeerId::new(1), client_name: "c", token }
    }

    #[test]
    fn a_signed_token_verifies_and_any_change_to_it_does_not() {
        let claims = TokenClaims::new("ann", vec!["notes/*".into()]).read_only().expiring_at(2_000);
        let token = sign_token(SECRET, &claims).unwrap();
        assert_eq!(verify_token(SECRET, token.as_bytes(), 1_000), Ok(claims.clone()));
        assert_eq!(verify_token(SECRET, token.as_bytes(), 2_000), Err(TokenError::Expired));
        assert_eq!(
            verify_token(b"another-secret-of-16+", token.as_bytes(), 0),
            Err(TokenError::BadSignature)
        );
        // Flip each hex digit of the claims in turn: never accepted.
        let body_start = PREFIX.len();
        let body_end = token.rfind('.').unwrap();
        for i in body_start..body_end {
            let mut altered = token.clone().into_bytes();
            altered[i] = if altered[i] == b'0' { b'1' } else { b'0' };
            assert!(verify_token(SECRET, &altered, 0).is_err(), "altered at {i}");
        }
        assert_eq!(verify_token(SECRET, b"", 0), Err(TokenError::Malformed));
        assert_eq!(verify_token(SECRET, b"cst1.zz.00", 0), Err(TokenError::Malformed));
        assert_eq!(verify_token(SECRET, &[0xff; 40], 0), Err(TokenError::Malformed));
        assert_eq!(sign_token(b"short", &claims), Err(TokenError::WeakSecret));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's epoch; everything after is relative to it
    fn the_authenticator_grants_the_token_documents_and_denies_the_rest() {
        let start = Instant::now();
        let mut auth = HmacAuthenticator::new(SECRET, start, 1_000).unwrap();
        let token =
            sign_token(SECRET, &TokenClaims::new("bob", vec!["a".into()]).expiring_at(1_060)).unwrap();
        let AuthDecision::Accept(identity) = auth.authenticate(start, &request(token.as_bytes())) else {
            panic!("refused a valid token")
        };
        assert_eq!(&**identity.subject(), "bob");
        assert_eq!(identity.permission("a"), Permission::ReadWrite);
        assert_eq!(identity.permission("b"), Permission::Denied);
        assert_eq!(identity.expires_at(), Some(start + Duration::from_secs(60)));
        let later = start + Duration::from_secs(61);
        assert_eq!(
            auth.authenticate(later, &request(token.as_bytes())),
            AuthDecision::Reject("token expired".into())
        );
        assert!(!format!("{auth:?}").contains("secret"));
    }
}

//! Who a client is and what it may do with each document.
//!
//! A client sends an opaque credential in its handshake ([`crate::ClientConfig::token`]).
//! A server with an [`Authenticator`] ([`crate::Server::set_authenticator`]) asks it who
//! that is: it answers with an [`Identity`], a refusal, or "later" ([`AuthDecision::Pending`])
//! when the answer needs IO (a database, an identity provider); the runtime then calls
//! [`crate::Server::complete_authentication`]. A server without one lets everyone read and
//! write everything, as before authentication existed.
//!
//! Every subscription gets a [`Permission`] from [`Authenticator::authorize`]:
//! - [`Permission::ReadWrite`]: changes both ways;
//! - [`Permission::ReadOnly`]: the client receives changes and presence, and whatever it
//!   sends for the document (changes, plugin messages such as awareness) is refused with
//!   [`crate::wire::ErrorCode::ReadOnly`] and reaches no one;
//! - [`Permission::Denied`]: the subscription is refused with
//!   [`crate::wire::ErrorCode::Forbidden`]; the document is neither created nor loaded.
//!
//! Permissions can change on a live connection: the client refreshes its token
//! ([`crate::ClientSession::set_token`]), or the application tells the server
//! ([`crate::Server::set_identity`], [`crate::Server::refresh_permissions`]). A subscription
//! that lost its access is evicted; one downgraded to read-only stays and stops taking
//! writes. An identity may expire ([`Identity::with_expiry`]): the server closes the
//! connection then, unless the client refreshed its token first.
//!
//! [`HmacAuthenticator`] checks the signed tokens that `crdt-sync token` makes.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{ConnectionId, PeerId};

mod token;

pub use token::{HmacAuthenticator, MIN_SECRET_BYTES, TokenClaims, TokenError, sign_token, verify_token};

/// What a client may do with one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Permission {
    /// Receive and send changes.
    ReadWrite,
    /// Receive only: changes and plugin messages from the client are refused.
    ReadOnly,
    /// Nothing: subscribing is refused, a live subscription is evicted.
    Denied,
}

/// Who a client is, as the [`Authenticator`] decided, and which documents it may use.
///
/// The rules are tried in the order given; the first whose pattern matches the document's
/// name decides, and the default applies when none does. A pattern is a document name, or a
/// prefix followed by `*` (`"team-a/*"`); `"*"` matches every document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    subject: Arc<str>,
    rules: Vec<(String, Permission)>,
    default: Permission,
    expires_at: Option<Instant>,
}

impl Identity {
    /// `subject` (a user name, an account id: whatever the application logs), allowed to
    /// read and write every document until rules say otherwise.
    pub fn new(subject: impl Into<Arc<str>>) -> Self {
        Identity {
            subject: subject.into(),
            rules: Vec::new(),
            default: Permission::ReadWrite,
            expires_at: None,
        }
    }

    /// The permission for documents no rule matches.
    pub fn with_default(mut self, permission: Permission) -> Self {
        self.default = permission;
        self
    }

    /// Add a rule: documents matching `pattern` get `permission` (unless an earlier rule
    /// matched them).
    pub fn with_rule(mut self, pattern: impl Into<String>, permission: Permission) -> Self {
        self.rules.push((pattern.into(), permission));
        self
    }

    /// The server closes the connection at `at` with
    /// [`crate::wire::CloseReason::AuthenticationExpired`], unless the client authenticated
    /// again before.
    pub fn with_expiry(mut self, at: Instant) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The subject.
    pub fn subject(&self) -> &Arc<str> {
        &self.subject
    }

    /// When the identity stops being valid.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// What this identity may do with `document`, by its rules.
    pub fn permission(&self, document: &str) -> Permission {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, document))
            .map_or(self.default, |(_, permission)| *permission)
    }
}

/// `pattern` is a name, or a prefix and `*`.
fn pattern_matches(pattern: &str, document: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => document.starts_with(prefix),
        None => pattern == document,
    }
}

/// What a client presented in its handshake (or later, refreshing its token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The connection.
    pub connection: ConnectionId,
    /// The replica id the client claims.
    pub peer: PeerId,
    /// The name the client gave.
    pub client_name: &'a str,
    /// The credential, as sent.
    pub token: &'a [u8],
}

/// An [`Authenticator`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDecision {
    /// The client is `Identity`.
    Accept(Identity),
    /// The credential is not valid; the reason is sent to the client and the connection is
    /// closed with [`crate::wire::CloseReason::Unauthorized`].
    Reject(String),
    /// The answer needs IO: the server reports [`crate::ServerEvent::AuthenticationRequested`]
    /// and waits (within its handshake timeout) for
    /// [`crate::Server::complete_authentication`].
    Pending,
}

/// Decides who a client is, and what it may do with each document.
pub trait Authenticator: Send + std::fmt::Debug + 'static {
    /// Check a credential. `now` is the server's clock, for expiry.
    fn authenticate(&mut self, now: Instant, request: &AuthRequest<'_>) -> AuthDecision;

    /// What `identity` may do with `document`. The default reads the identity's rules; an
    /// application with permissions in its own database answers from there, and calls
    /// [`crate::Server::refresh_permissions`] when they change.
    fn authorize(&mut self, _now: Instant, identity: &Identity, document: &str) -> Permission {
        identity.permission(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let identity = Identity::new("ann")
            .with_default(Permission::Denied)
            .with_rule("team/secret", Permission::ReadOnly)
            .with_rule("team/*", Permission::ReadWrite);
        assert_eq!(identity.permission("team/secret"), Permission::ReadOnly);
        assert_eq!(identity.permission("team/notes"), Permission::ReadWrite);
        assert_eq!(identity.permission("other"), Permission::Denied);
        assert_eq!(identity.permission("team"), Permission::Denied);
        assert_eq!(
            Identity::new("bob").with_rule("*", Permission::ReadOnly).permission("x"),
            Permission::ReadOnly
        );
    }
}

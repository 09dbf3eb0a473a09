//! Who may connect and what they may do: authentication in the handshake and on refresh,
//! per-document permissions, unauthenticated connections per address, the message rate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::Server;
use crate::auth::{AuthDecision, AuthRequest, Authenticator, Identity, Permission};
use crate::store::DocumentStore;
use crate::wire::{CloseReason, DocSlot, ErrorCode, Message, PROTOCOL_VERSION};
use crate::{ConnectionId, PeerId, ProtocolError, ServerEvent};

/// Why [`Server::accept_from`] refused a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The address already has the most unfinished handshakes allowed
    /// ([`crate::ServerConfig::max_unauthenticated_per_address`]).
    #[error("{address} already has {limit} connections that have not finished the handshake")]
    TooManyUnauthenticated {
        /// The address.
        address: IpAddr,
        /// The limit.
        limit: usize,
    },
}

/// A connection's token bucket (see [`crate::ServerConfig::max_messages_per_second`]).
#[derive(Debug)]
pub(super) struct RateLimiter {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(super) fn new(now: Instant, burst: u32) -> Self {
        RateLimiter { tokens: f64::from(burst), at: now }
    }
}

/// A handshake waiting for [`Server::complete_authentication`].
#[derive(Debug)]
pub(super) struct PendingHello {
    peer: PeerId,
    client_name: String,
}

impl<S: DocumentStore> Server<S> {
    /// Check every client with `authenticator` from now on: in its handshake, when it
    /// refreshes its token, and for every document it subscribes (see [`crate::auth`]).
    /// Connections already open keep their access until they authenticate again or
    /// [`Server::refresh_permissions`] runs.
    pub fn set_authenticator(&mut self, authenticator: impl Authenticator) {
        self.authenticator = Some(Box::new(authenticator));
    }

    /// A transport from `address` was accepted; returns the id to pass with its input, or
    /// refuses it when the address has too many unfinished handshakes (close the transport
    /// at once then, before its TLS or WebSocket handshake).
    pub fn accept_from(&mut self, now: Instant, address: IpAddr) -> Result<ConnectionId, AcceptError> {
        let limit = self.config.max_unauthenticated_per_address;
        // Looked up before inserting: a refused address leaves no entry behind.
        if self.unauthenticated.get(&address).is_some_and(|count| *count >= limit) || limit == 0 {
            return Err(AcceptError::TooManyUnauthenticated { address, limit });
        }
        *self.unauthenticated.entry(address).or_default() += 1;
        let id = self.accept(now);
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.address = Some(address);
        }
        Ok(id)
    }

    /// The identity a connection authenticated as (`None` before the handshake, or on a
    /// server without an authenticator).
    pub fn identity(&self, connection: ConnectionId) -> Option<&Identity> {
        self.connections.get(&connection)?.identity.as_ref()
    }

    /// The answer to a [`ServerEvent::AuthenticationRequested`]: who the client is, or why
    /// it is refused. Ignored for a connection that is gone or not waiting.
    pub fn complete_authentication(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        decision: Result<Identity, String>,
    ) {
        self.last_now = Some(now);
        let Some(conn) = self.connections.get_mut(&connection) else { return };
        let decision = match decision {
            Ok(identity) => AuthDecision::Accept(identity),
            Err(reason) => AuthDecision::Reject(reason),
        };
        if let Some(hello) = conn.pending_hello.take() {
            self.decide_hello(connection, hello, decision);
        } else if std::mem::take(&mut conn.reauthenticating) {
            self.decide_refresh(connection, decision);
        }
    }

    /// Give a live connection a new identity (permissions changed in the application): each
    /// of its subscriptions is decided again, evicted if now denied, told if downgraded or
    /// upgraded.
    pub fn set_identity(&mut self, now: Instant, connection: ConnectionId, identity: Identity) {
        self.last_now = Some(now);
        let Some(conn) = self.connections.get_mut(&connection) else { return };
        if conn.peer.is_none() {
            return;
        }
        conn.identity = Some(identity);
        self.reauthorize(connection);
    }

    /// Ask the authenticator again about every subscription (its permissions changed):
    /// denied ones are evicted, changed ones told.
    pub fn refresh_permissions(&mut self, now: Instant) {
        self.last_now = Some(now);
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.reauthorize(id);
        }
    }

    // ---- internals ---------------------------------------------------------------------

    pub(super) fn on_hello(&mut self, id: ConnectionId, peer: PeerId, client_name: String, token: &[u8]) {
        let Some(now) = self.last_now else { return };
        let decision = match self.authenticator.as_mut() {
            None => AuthDecision::Accept(Identity::new("")),
            Some(auth) => {
                let request = AuthRequest { connection: id, peer, client_name: &client_name, token };
                auth.authenticate(now, &request)
            }
        };
        if decision == AuthDecision::Pending {
            let event = ServerEvent::AuthenticationRequested {
                connection: id,
                peer,
                client_name: client_name.clone(),
                token: token.to_vec(),
            };
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.pending_hello = Some(PendingHello { peer, client_name });
            }
            self.events.push_back(event);
            return;
        }
        self.decide_hello(id, PendingHello { peer, client_name }, decision);
    }

    fn decide_hello(&mut self, id: ConnectionId, hello: PendingHello, decision: AuthDecision) {
        let identity = match decision {
            AuthDecision::Accept(identity) => identity,
            AuthDecision::Reject(reason) => return self.unauthorized(id, reason),
            // Only authenticators answer Pending; `complete_authentication` never does.
            AuthDecision::Pending => return,
        };
        let PendingHello { peer, client_name } = hello;
        let ping_interval_ms = u32::try_from(self.config.ping_interval.as_millis()).unwrap_or(u32::MAX);
        let window_bytes = self.config.window_bytes;
        let Some(conn) = self.connections.get_mut(&id) else { return };
        conn.peer = Some(peer);
        if let Some(address) = conn.address {
            self.release_unauthenticated(address);
        }
        let Some(conn) = self.connections.get_mut(&id) else { return };
        if self.authenticator.is_some() {
            self.events.push_back(ServerEvent::Authenticated {
                connection: id,
                subject: identity.subject().clone(),
            });
        }
        conn.identity = Some(identity);
        conn.outbox.push(Message::Welcome { version: PROTOCOL_VERSION, ping_interval_ms, window_bytes });
        self.events.push_back(ServerEvent::Handshake { connection: id, peer, client_name });
        if let Some(now) = self.last_now {
            for plugin in &mut self.plugins {
                plugin.on_connected(now, id, peer);
            }
        }
    }

    pub(super) fn on_authenticate(&mut self, id: ConnectionId, token: &[u8]) {
        let Some(now) = self.last_now else { return };
        let Some(conn) = self.connections.get(&id) else { return };
        let Some(peer) = conn.peer else { return };
        let Some(auth) = self.authenticator.as_mut() else {
            // Nothing to check tokens against: everyone keeps full access.
            return;
        };
        let request = AuthRequest { connection: id, peer, client_name: "", token };
        let decision = auth.authenticate(now, &request);
        if decision == AuthDecision::Pending {
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.reauthenticating = true;
            }
            self.events.push_back(ServerEvent::AuthenticationRequested {
                connection: id,
                peer,
                client_name: String::new(),
                token: token.to_vec(),
            });
            return;
        }
        self.decide_refresh(id, decision);
    }

    fn decide_refresh(&mut self, id: ConnectionId, decision: AuthDecision) {
        match decision {
            AuthDecision::Accept(identity) => {
                self.events.push_back(ServerEvent::Authenticated {
                    connection: id,
                    subject: identity.subject().clone(),
                });
                if let Some(conn) = self.connections.get_mut(&id) {
                    conn.identity = Some(identity);
                }
                self.reauthorize(id);
            }
            AuthDecision::Reject(reason) => self.unauthorized(id, reason),
            AuthDecision::Pending => {}
        }
    }

    fn unauthorized(&mut self, id: ConnectionId, reason: String) {
        self.events.push_back(ServerEvent::AuthenticationFailed { connection: id, reason: reason.clone() });
        self.send_now(
            id,
            vec![
                Message::Error { doc: None, code: ErrorCode::Unauthorized, detail: reason },
                Message::Close { reason: CloseReason::Unauthorized },
            ],
        );
        self.finish(id, CloseReason::Unauthorized);
    }

    /// What connection `id` may do with `document` now.
    pub(super) fn permission_for(&mut self, id: ConnectionId, document: &str) -> Permission {
        let Some(now) = self.last_now else { return Permission::Denied };
        let Some(identity) = self.connections.get(&id).and_then(|c| c.identity.as_ref()) else {
            return Permission::Denied;
        };
        match self.authenticator.as_mut() {
            Some(auth) => auth.authorize(now, identity, document),
            None => identity.permission(document),
        }
    }

    /// Decide every subscription of `id` again.
    fn reauthorize(&mut self, id: ConnectionId) {
        let Some(conn) = self.connections.get(&id) else { return };
        let slots: Vec<(DocSlot, Arc<str>, Permission)> = conn
            .subscriptions
            .iter()
            .map(|(slot, sub)| (*slot, sub.document.clone(), sub.permission))
            .collect();
        for (slot, document, before) in slots {
            let now = self.permission_for(id, &document);
            if now == before {
                continue;
            }
            self.events.push_back(ServerEvent::PermissionChanged {
                connection: id,
                document: document.clone(),
                permission: now,
            });
            let Some(conn) = self.connections.get_mut(&id) else { return };
            if now == Permission::Denied {
                conn.outbox.push(Message::Error {
                    doc: Some(slot),
                    code: ErrorCode::Forbidden,
                    detail: format!("access to {document} was revoked"),
                });
                self.evict(id, slot);
            } else if let Some(sub) = conn.subscriptions.get_mut(&slot) {
                sub.permission = now;
                conn.outbox.push(Message::Access { doc: slot, permission: now });
            }
        }
    }

    /// Drop a subscription the server ended (the client was told why).
    fn evict(&mut self, id: ConnectionId, slot: DocSlot) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let Some(sub) = conn.subscriptions.remove(&slot) else { return };
        conn.acks.remove(&slot);
        let peer = conn.peer;
        self.forget_subscriber(&sub.document, id, slot);
        if let (Some(now), Some(peer)) = (self.last_now, peer) {
            for plugin in &mut self.plugins {
                plugin.on_unsubscribed(now, id, peer, &sub.document);
            }
        }
        self.events.push_back(ServerEvent::Unsubscribed { connection: id, document: sub.document });
    }

    /// Refuse what a read-only subscriber sent for `slot`.
    pub(super) fn refuse_read_only(
        &mut self,
        id: ConnectionId,
        slot: DocSlot,
        document: Arc<str>,
        what: &str,
    ) {
        let detail = format!("{document} is read-only for this client: its {what} were refused");
        self.refuse_access(id, slot, document, Permission::ReadOnly, detail);
    }

    /// Refuse a subscription the client may not have; nothing is created or loaded.
    pub(super) fn refuse_forbidden(&mut self, id: ConnectionId, slot: DocSlot, document: Arc<str>) {
        let detail = format!("this client may not use {document}");
        self.refuse_access(id, slot, document, Permission::Denied, detail);
    }

    /// Tell the client what its `permission` does not allow, and report it.
    fn refuse_access(
        &mut self,
        id: ConnectionId,
        slot: DocSlot,
        document: Arc<str>,
        permission: Permission,
        detail: String,
    ) {
        let code =
            if permission == Permission::ReadOnly { ErrorCode::ReadOnly } else { ErrorCode::Forbidden };
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.outbox.push(Message::Error { doc: Some(slot), code, detail });
        }
        self.events.push_back(ServerEvent::AccessRefused { connection: id, document, permission });
    }

    /// Take `cost` messages from the connection's bucket; `false` (and the connection
    /// closed) when it is empty.
    pub(super) fn charge(&mut self, id: ConnectionId, now: Instant, cost: usize) -> bool {
        let rate = self.config.max_messages_per_second;
        if rate == 0 {
            return true;
        }
        let burst = f64::from(self.config.message_burst.max(1));
        let Some(conn) = self.connections.get_mut(&id) else { return false };
        let bucket = &mut conn.rate;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = bucket.at.max(now);
        bucket.tokens = (bucket.tokens + elapsed * f64::from(rate)).min(burst);
        // A frame holds at most `max_messages_per_frame` messages; one frame may take the
        // bucket below zero, the next one then finds it empty.
        if bucket.tokens <= 0.0 {
            let detail = "more messages per second than allowed";
            self.violation(
                id,
                ErrorCode::LimitExceeded,
                ProtocolError::LimitExceeded(detail),
                CloseReason::LimitExceeded,
            );
            return false;
        }
        bucket.tokens -= cost as f64;
        true
    }

    /// Close connections whose identity expired.
    pub(super) fn expire_identities(&mut self, now: Instant) {
        let expired: Vec<ConnectionId> = self
            .connections
            .iter()
            // A refresh still being checked does not hold the expiry off: refresh earlier.
            .filter(|(_, c)| c.identity.as_ref().and_then(Identity::expires_at).is_some_and(|at| now >= at))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.events.push_back(ServerEvent::AuthenticationFailed {
                connection: id,
                reason: "identity expired".into(),
            });
            self.close_with(id, CloseReason::AuthenticationExpired);
        }
    }

    pub(super) fn release_unauthenticated(&mut self, address: IpAddr) {
        if let Some(count) = self.unauthenticated.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.unauthenticated.remove(&address);
            }
        }
    }
}

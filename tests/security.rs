//! Authentication, per-document permissions and limits: every refusal reaches the client as
//! a typed error, and what was refused reaches no other replica.

mod common;

use std::time::Duration;

use common::net::Net;
use crdt_sync::auth::{
    AuthDecision, AuthRequest, Authenticator, Identity, Permission, TokenClaims, sign_token,
};
use crdt_sync::wire::{CloseReason, ErrorCode, Message, PROTOCOL_VERSION, WireLimits, encode_frame};
use crdt_sync::{
    AcceptError, Awareness, AwarenessConfig, AwarenessServer, ClientConfig, ClientEvent, ConnectionStatus,
    HmacAuthenticator, PeerId, ProtocolError, Server, ServerConfig, ServerEvent,
};

const SECRET: &[u8] = b"a-secret-of-more-than-16-bytes";
/// The Unix time the tests' servers start at.
const START_UNIX: u64 = 1_800_000_000;

fn token(documents: &[&str], read_only: bool) -> Vec<u8> {
    let mut claims = TokenClaims::new("user", documents.iter().map(|d| d.to_string()).collect());
    if read_only {
        claims = claims.read_only();
    }
    sign_token(SECRET, &claims).unwrap().into_bytes()
}

/// A server checking tokens signed with [`SECRET`].
fn net_with_tokens(config: ServerConfig) -> Net {
    let mut net = Net::new(Server::in_memory(config));
    let auth = HmacAuthenticator::new(SECRET, net.now, START_UNIX).unwrap();
    net.server.set_authenticator(auth);
    net
}

fn with_token(token: Vec<u8>) -> ClientConfig {
    ClientConfig::default().with_token(token)
}

fn refused_codes(events: &[ClientEvent]) -> Vec<ErrorCode> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Error(ProtocolError::Refused { code, .. }) => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_with_a_bad_token_is_refused_and_waits_for_a_new_one() {
    let mut net = net_with_tokens(ServerConfig::default());
    let forged = sign_token(b"not-the-servers-secret!!", &TokenClaims::new("eve", vec!["*".into()])).unwrap();
    let eve = net.add_client(2, with_token(forged.into_bytes()), &["doc"]);

    let events = &net.clients[eve].events;
    assert!(
        events.iter().any(
            |e| matches!(e, ClientEvent::AuthenticationFailed { detail } if detail.contains("signature"))
        ),
        "{events:?}"
    );
    assert_eq!(net.session(eve).status(), ConnectionStatus::Error);
    assert!(net.server_events.iter().any(|e| matches!(e, ServerEvent::AuthenticationFailed { .. })));
    assert!(net.server.document("doc").is_none(), "nothing created for a stranger");

    // No retry with a token that will be refused again.
    let opened =
        |net: &Net| net.clients[eve].events.iter().filter(|e| **e == ClientEvent::OpenTransport).count();
    let before = opened(&net);
    net.advance(Duration::from_secs(120));
    assert_eq!(opened(&net), before);

    // A valid token brings it in.
    let now = net.now;
    net.session(eve).set_token(now, token(&["doc"], false));
    net.pump();
    assert_eq!(net.session(eve).status(), ConnectionStatus::Connected);
    net.edit(eve, "doc", "hello");
    assert_eq!(net.server_text("doc").as_deref(), Some("hello"));
}

#[test]
fn a_client_without_any_token_is_refused() {
    let mut net = net_with_tokens(ServerConfig::default());
    let anon = net.add_client(3, ClientConfig::default(), &["doc"]);
    assert_eq!(net.session(anon).status(), ConnectionStatus::Error);
    assert!(
        net.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::ConnectionClosed { reason: CloseReason::Unauthorized, .. }))
    );
}

#[test]
fn a_denied_document_is_refused_and_neither_created_nor_seen() {
    let mut net = net_with_tokens(ServerConfig::default());
    let admin = net.add_client(1, with_token(token(&["*"], false)), &["open", "secret"]);
    net.edit(admin, "secret", "launch codes");
    let user =
        net.add_client(2, with_token(token(&["open", "missing-*"], false)), &["open", "secret", "other"]);

    let events = &net.clients[user].events;
    for doc in ["secret", "other"] {
        assert!(
            events.iter().any(|e| matches!(e,
                ClientEvent::PermissionChanged { document, permission: Permission::Denied } if &**document == doc)),
            "{doc}: {events:?}"
        );
    }
    assert_eq!(refused_codes(events), [ErrorCode::Forbidden, ErrorCode::Forbidden]);
    assert_eq!(net.session(user).permission("secret"), Some(Permission::Denied));
    assert_eq!(net.text(user, "secret"), "");
    assert!(net.server.document("other").is_none(), "a denied subscribe creates nothing");
    assert!(net.server_events.iter().any(|e| matches!(e,
        ServerEvent::AccessRefused { document, permission: Permission::Denied, .. } if &**document == "secret")));

    // Later changes to the secret document never reach it; the open one syncs.
    net.edit(admin, "secret", "!");
    net.edit(admin, "open", "welcome");
    assert_eq!(net.text(user, "secret"), "");
    assert_eq!(net.text(user, "open"), "welcome");
    assert_eq!(net.session(user).status(), ConnectionStatus::Connected);
}

type Presence = Awareness<String>;

/// A client with presence, on "doc", with a token for it (`read_only` or not); `prepare`
/// runs on it before it subscribes.
fn join_with_presence(
    net: &mut Net,
    peer: u64,
    read_only: bool,
    prepare: impl FnOnce(&mut common::net::NetClient),
) -> usize {
    let client = net.add_client(peer, with_token(token(&["doc"], read_only)), &[]);
    prepare(&mut net.clients[client]);
    net.session(client).add_plugin(Presence::new(AwarenessConfig::default()));
    net.session(client).subscribe("doc", crdt_sync::Document::new(PeerId::new(peer)));
    net.pump();
    client
}

#[test]
fn a_readers_changes_and_presence_stay_with_it() {
    let mut net = net_with_tokens(ServerConfig::default());
    net.server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let writer = join_with_presence(&mut net, 1, false, |_| {});
    let reader = join_with_presence(&mut net, 2, true, |_| {});
    net.edit(writer, "doc", "from the writer");

    assert!(
        net.clients[reader]
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::PermissionChanged { permission: Permission::ReadOnly, .. }))
    );
    assert_eq!(net.session(reader).permission("doc"), Some(Permission::ReadOnly));
    assert_eq!(net.text(reader, "doc"), "from the writer", "a reader receives");

    // The reader types and shows a cursor: both stay local.
    net.edit(reader, "doc", " + reader's edit");
    let now = net.now;
    net.session(reader).plugin_mut::<Presence>().unwrap().set_local_state(now, "doc", "reader here".into());
    net.pump();
    net.advance(Duration::from_secs(1));
    assert_eq!(net.server_text("doc").as_deref(), Some("from the writer"));
    assert_eq!(net.text(writer, "doc"), "from the writer");
    let seen = net.session(writer).plugin::<Presence>().unwrap().state_of("doc", PeerId::new(2)).cloned();
    assert_eq!(seen, None, "a reader's presence reaches no one");
    assert!(!net.session(reader).is_saved("doc"), "its edit is not saved anywhere");

    // The writer's presence does reach the reader.
    let now = net.now;
    net.session(writer).plugin_mut::<Presence>().unwrap().set_local_state(now, "doc", "writer here".into());
    net.pump();
    let seen = net.session(reader).plugin::<Presence>().unwrap().state_of("doc", PeerId::new(1)).cloned();
    assert_eq!(seen.as_deref(), Some("writer here"));
}

#[test]
fn a_reader_that_ignores_its_permission_is_refused_and_nothing_reaches_anyone() {
    let mut net = net_with_tokens(ServerConfig::default());
    net.server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let writer = join_with_presence(&mut net, 1, false, |_| {});
    // A modified client: it never hears that it may only read, so it sends anyway.
    let rogue = join_with_presence(&mut net, 2, true, |client| {
        client.filter = Some(Box::new(|messages| {
            messages.into_iter().filter(|m| !matches!(m, Message::Access { .. })).collect()
        }));
    });
    let now = net.now;
    net.session(rogue).plugin_mut::<Presence>().unwrap().set_local_state(now, "doc", "rogue".into());
    net.edit(rogue, "doc", "vandalism");
    net.advance(Duration::from_secs(1));

    assert_eq!(refused_codes(&net.clients[rogue].events), [ErrorCode::ReadOnly, ErrorCode::ReadOnly]);
    let refusals = net
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::AccessRefused { permission: Permission::ReadOnly, .. }))
        .count();
    assert_eq!(refusals, 2, "the presence and the changes");
    assert_eq!(net.server_text("doc").as_deref(), Some(""));
    assert_eq!(net.text(writer, "doc"), "");
    let seen = net.session(writer).plugin::<Presence>().unwrap().state_of("doc", PeerId::new(2)).cloned();
    assert_eq!(seen, None);
    // Refused, not disconnected: it still receives.
    net.edit(writer, "doc", "real text");
    assert!(net.text(rogue, "doc").contains("real text"));
}

/// Permissions from the application's own records, changed while clients are connected.
#[derive(Debug, Default)]
struct Table {
    readers_only: bool,
    revoked: bool,
}

impl Authenticator for Table {
    fn authenticate(&mut self, _now: std::time::Instant, request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Accept(Identity::new(String::from_utf8_lossy(request.token).into_owned()))
    }

    fn authorize(&mut self, _now: std::time::Instant, identity: &Identity, _document: &str) -> Permission {
        match &**identity.subject() {
            "bob" if self.revoked => Permission::Denied,
            "bob" if self.readers_only => Permission::ReadOnly,
            _ => Permission::ReadWrite,
        }
    }
}

#[test]
fn a_live_subscription_is_downgraded_upgraded_and_evicted() {
    let mut net = Net::new(Server::in_memory(ServerConfig::default()));
    net.server.set_authenticator(Table::default());
    let ann = net.add_client(1, with_token(b"ann".to_vec()), &["doc"]);
    let bob = net.add_client(2, with_token(b"bob".to_vec()), &["doc"]);
    net.edit(bob, "doc", "a");
    assert_eq!(net.text(ann, "doc"), "a");

    // Downgrade: bob keeps receiving, his edits stay with him. (The application's records
    // change; here the authenticator is replaced with one that reads the new ones.)
    let now = net.now;
    net.server.set_authenticator(Table { readers_only: true, revoked: false });
    net.server.refresh_permissions(now);
    net.pump();
    assert_eq!(net.session(bob).permission("doc"), Some(Permission::ReadOnly));
    net.edit(bob, "doc", "b");
    net.edit(ann, "doc", "c");
    assert_eq!(net.text(ann, "doc"), "ac");
    assert_eq!(net.server_text("doc").as_deref(), Some("ac"));
    assert!(net.text(bob, "doc").contains('c'), "a reader still receives");

    // Upgrade: what bob typed meanwhile goes out now.
    let now = net.now;
    net.server.set_authenticator(Table::default());
    net.server.refresh_permissions(now);
    net.pump();
    assert_eq!(net.session(bob).permission("doc"), Some(Permission::ReadWrite));
    assert_eq!(net.text(ann, "doc").len(), 3);
    assert_eq!(net.text(ann, "doc"), net.text(bob, "doc"));
    net.advance(Duration::from_millis(100));
    assert!(net.session(bob).is_saved("doc"));

    // Revoked: evicted, and nothing more arrives.
    let now = net.now;
    net.server.set_authenticator(Table { readers_only: false, revoked: true });
    net.server.refresh_permissions(now);
    net.pump();
    assert_eq!(net.session(bob).permission("doc"), Some(Permission::Denied));
    let bobs = net.text(bob, "doc");
    net.edit(ann, "doc", "d");
    assert_eq!(net.text(bob, "doc"), bobs);
    assert_eq!(net.session(bob).status(), ConnectionStatus::Connected, "evicted from the document only");
    let changes: Vec<Permission> = net
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::PermissionChanged { permission, .. } => Some(*permission),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [Permission::ReadOnly, Permission::ReadWrite, Permission::Denied]);
}

#[test]
fn set_identity_downgrades_one_connection() {
    let mut net = Net::new(Server::in_memory(ServerConfig::default()));
    let ann = net.add_client(1, ClientConfig::default(), &["doc"]);
    let bob = net.add_client(2, ClientConfig::default(), &["doc"]);
    let bob_connection = net.clients[bob].connection.unwrap();
    let now = net.now;
    net.server.set_identity(now, bob_connection, Identity::new("bob").with_default(Permission::ReadOnly));
    net.pump();
    net.edit(bob, "doc", "nope");
    net.edit(ann, "doc", "yes");
    assert_eq!(net.server_text("doc").as_deref(), Some("yes"));
    assert_eq!(net.session(bob).permission("doc"), Some(Permission::ReadOnly));
    assert_eq!(net.session(ann).permission("doc"), Some(Permission::ReadWrite));
}

#[test]
fn a_refreshed_token_replaces_access_and_an_expired_one_closes_the_connection() {
    let mut net = net_with_tokens(ServerConfig::default());
    let expiring = |documents: &[&str], read_only: bool, at: u64| {
        let mut claims =
            TokenClaims::new("user", documents.iter().map(|d| d.to_string()).collect()).expiring_at(at);
        if read_only {
            claims = claims.read_only();
        }
        sign_token(SECRET, &claims).unwrap().into_bytes()
    };
    let fresh = net.add_client(1, with_token(expiring(&["doc"], false, START_UNIX + 60)), &["doc"]);
    let stale = net.add_client(2, with_token(expiring(&["doc"], false, START_UNIX + 60)), &["doc"]);

    // Thirty seconds in, one client refreshes its token, read-only this time.
    net.advance(Duration::from_secs(30));
    let now = net.now;
    net.session(fresh).set_token(now, expiring(&["doc"], true, START_UNIX + 3600));
    net.pump();
    assert_eq!(net.session(fresh).permission("doc"), Some(Permission::ReadOnly));
    assert_eq!(
        net.server_events.iter().filter(|e| matches!(e, ServerEvent::Authenticated { .. })).count(),
        3
    );

    // At sixty the other's identity expires: closed; it comes back with the same token,
    // which is refused now, and waits for a new one.
    net.advance(Duration::from_secs(31));
    assert!(
        net.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::ConnectionClosed { reason: CloseReason::AuthenticationExpired, .. }
        )),
        "{:?}",
        net.server_events
    );
    net.advance(Duration::from_secs(5));
    assert_eq!(net.session(stale).status(), ConnectionStatus::Error);
    assert!(net.clients[stale].events.iter().any(|e| matches!(e,
        ClientEvent::AuthenticationFailed { detail } if detail.contains("expired"))));
    assert_eq!(net.session(fresh).status(), ConnectionStatus::Connected);
    let now = net.now;
    net.session(stale).set_token(now, expiring(&["doc"], false, START_UNIX + 3600));
    net.pump();
    assert_eq!(net.session(stale).status(), ConnectionStatus::Connected);
}

/// Answers later, as an authenticator that asks a remote service would.
#[derive(Debug)]
struct Remote;

impl Authenticator for Remote {
    fn authenticate(&mut self, _now: std::time::Instant, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Pending
    }
}

#[test]
fn authentication_can_be_answered_later_within_the_handshake_timeout() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(5));
    let mut net = Net::new(Server::in_memory(config));
    net.server.set_authenticator(Remote);
    let ok = net.add_client(1, with_token(b"good".to_vec()), &["doc"]);
    let slow = net.add_client(2, with_token(b"unanswered".to_vec()), &["doc"]);
    let requests: Vec<_> = net
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::AuthenticationRequested { connection, token, .. } => {
                Some((*connection, token.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(net.session(ok).status(), ConnectionStatus::Connecting);
    let now = net.now;
    net.server.complete_authentication(now, requests[0].0, Ok(Identity::new("ok")));
    net.pump();
    assert_eq!(net.session(ok).status(), ConnectionStatus::Connected);
    // The other is never answered: the handshake timeout closes it.
    net.advance(Duration::from_secs(6));
    assert!(net.server_events.iter().any(|e| matches!(e,
        ServerEvent::ConnectionClosed { connection, reason: CloseReason::HandshakeTimeout } if *connection == requests[1].0)));
    assert_ne!(net.session(slow).status(), ConnectionStatus::Connected);
}

fn hello(peer: u64) -> Vec<u8> {
    encode_frame(&[Message::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        peer: PeerId::new(peer),
        client_name: "raw".into(),
        token: Vec::new(),
    }])
}

fn closed_with(net: &Net, raw: usize) -> Option<(ErrorCode, CloseReason)> {
    let messages = net.raw_messages(raw);
    let code = messages.iter().find_map(|m| match m {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    })?;
    let reason = messages.iter().find_map(|m| match m {
        Message::Close { reason } => Some(*reason),
        _ => None,
    })?;
    Some((code, reason))
}

#[test]
fn a_flood_of_messages_closes_that_connection_only() {
    let config = ServerConfig::default().with_rate_limit(100, 200);
    let mut net = Net::new(Server::in_memory(config));
    let good = net.add_client(1, ClientConfig::default(), &["doc"]);
    let flood = net.add_raw().unwrap();
    net.send_raw(flood, &hello(9));
    let pings: Vec<Message> = (0..50).map(|nonce| Message::Ping { nonce }).collect();
    let frame = encode_frame(&pings);
    for _ in 0..10 {
        if !net.raw[flood].open {
            break;
        }
        net.send_raw(flood, &frame);
    }
    assert!(!net.raw[flood].open);
    assert_eq!(closed_with(&net, flood), Some((ErrorCode::LimitExceeded, CloseReason::LimitExceeded)));
    // A client typing at human speed is never near it.
    for i in 0..30 {
        net.edit(good, "doc", &i.to_string());
        net.advance(Duration::from_millis(100));
    }
    assert_eq!(net.session(good).status(), ConnectionStatus::Connected);
    assert!(net.session(good).is_saved("doc"));
}

#[test]
fn unfinished_handshakes_are_limited_per_address() {
    let config = ServerConfig::default()
        .with_max_unauthenticated_per_address(3)
        .with_handshake_timeout(Duration::from_secs(2));
    let mut net = Net::new(Server::in_memory(config));
    let silent: Vec<usize> = (0..3).map(|_| net.add_raw().unwrap()).collect();
    let refused = net.server.accept_from(net.now, net.address);
    assert!(matches!(refused, Err(AcceptError::TooManyUnauthenticated { limit: 3, .. })), "{refused:?}");
    // Another address is not affected.
    let other = net.server.accept_from(net.now, "10.0.0.7".parse().unwrap());
    assert!(other.is_ok());
    // One finishes its handshake: a place frees up.
    net.send_raw(silent[0], &hello(5));
    assert!(net.add_raw().is_some());
    assert!(net.add_raw().is_none());
    // The silent ones time out and free theirs.
    net.advance(Duration::from_secs(3));
    for raw in &silent[1..] {
        assert!(!net.raw[*raw].open);
    }
    assert!(
        net.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::ConnectionClosed { reason: CloseReason::HandshakeTimeout, .. }
        ))
    );
    assert!(net.add_raw().is_some());
    // A well-behaved client still gets in.
    let good = net.add_client(1, ClientConfig::default(), &["doc"]);
    assert_eq!(net.session(good).status(), ConnectionStatus::Connected);
}

/// The start of an lz4 frame whose payload claims to be `declared` bytes long.
fn lz4_frame_declaring(declared: u64) -> Vec<u8> {
    let mut frame = vec![PROTOCOL_VERSION, 0b1];
    let mut rest = declared;
    while rest >= 0x80 {
        frame.push((rest as u8) | 0x80);
        rest >>= 7;
    }
    frame.push(rest as u8);
    frame
}

#[test]
fn oversized_frames_bombs_and_garbage_close_only_their_connection() {
    let limits =
        WireLimits::default().with_max_frame_bytes(64 * 1024).with_max_decompressed_bytes(1024 * 1024);
    let mut net = Net::new(Server::in_memory(ServerConfig::default().with_limits(limits)));
    let good = net.add_client(1, ClientConfig::default(), &["doc"]);

    let oversized = net.add_raw().unwrap();
    net.send_raw(oversized, &hello(7));
    let mut frame = encode_frame(&[Message::Ping { nonce: 1 }]);
    frame.resize(64 * 1024 + 1, 0);
    net.send_raw(oversized, &frame);
    assert_eq!(closed_with(&net, oversized), Some((ErrorCode::LimitExceeded, CloseReason::LimitExceeded)));

    // An lz4 frame declaring a 1 GiB payload: refused before anything is allocated.
    let bomb = net.add_raw().unwrap();
    let mut frame = lz4_frame_declaring(1 << 30);
    frame.push(0x1f);
    frame.extend_from_slice(&[0; 16]);
    net.send_raw(bomb, &frame);
    assert_eq!(closed_with(&net, bomb), Some((ErrorCode::LimitExceeded, CloseReason::LimitExceeded)));

    // A real bomb: 1 MiB + 1 of zeros compresses to a few KiB, past the decompressed limit.
    let bomb2 = net.add_raw().unwrap();
    let payload = vec![0u8; 1024 * 1024 + 1];
    let mut frame = lz4_frame_declaring(payload.len() as u64);
    frame.extend_from_slice(&lz4_flex::block::compress(&payload));
    assert!(frame.len() < 64 * 1024);
    net.send_raw(bomb2, &frame);
    assert_eq!(closed_with(&net, bomb2), Some((ErrorCode::LimitExceeded, CloseReason::LimitExceeded)));

    // An HTTP request where a frame should be: its first byte is no protocol version.
    let http = net.add_raw().unwrap();
    net.send_raw(http, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        closed_with(&net, http),
        Some((ErrorCode::UnsupportedVersion, CloseReason::UnsupportedVersion))
    );
    let garbage = net.add_raw().unwrap();
    net.send_raw(garbage, &[PROTOCOL_VERSION, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(closed_with(&net, garbage), Some((ErrorCode::Malformed, CloseReason::ProtocolViolation)));

    net.edit(good, "doc", "unbothered");
    assert_eq!(net.server_text("doc").as_deref(), Some("unbothered"));
    assert_eq!(net.session(good).status(), ConnectionStatus::Connected);
}

#[test]
fn too_many_documents_on_one_connection_are_refused_one_by_one() {
    let config = ServerConfig::default().with_max_documents_per_connection(2);
    let mut net = Net::new(Server::in_memory(config));
    let client = net.add_client(1, ClientConfig::default(), &["a", "b", "c"]);
    assert_eq!(refused_codes(&net.clients[client].events), [ErrorCode::LimitExceeded]);
    assert!(net.server.document("c").is_none());
    // The connection and the documents within the limit carry on.
    net.edit(client, "a", "x");
    assert_eq!(net.server_text("a").as_deref(), Some("x"));
}

#[test]
fn a_client_that_stops_reading_is_closed_once_its_backlog_passes_the_limit() {
    let config = ServerConfig::default().with_max_pending_outbound_bytes(32 * 1024);
    let mut net = Net::new(Server::in_memory(config));
    net.server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let talker = net.add_client(1, ClientConfig::default(), &[]);
    net.session(talker).add_plugin(Presence::new(AwarenessConfig::default()));
    net.session(talker).subscribe("doc", crdt_sync::Document::new(PeerId::new(1)));
    let sleeper = net.add_client(2, ClientConfig::default(), &[]);
    net.session(sleeper).add_plugin(Presence::new(AwarenessConfig::default()));
    net.session(sleeper).subscribe("doc", crdt_sync::Document::new(PeerId::new(2)));
    net.pump();
    net.clients[sleeper].stalled = true;
    // Presence is not document data: the flow-control window does not hold it back.
    for i in 0..2_000 {
        let now = net.now;
        let state = format!("cursor {i} {}", "x".repeat(64));
        net.session(talker).plugin_mut::<Presence>().unwrap().set_local_state(now, "doc", state);
        net.advance(Duration::from_millis(50));
        if net.clients[sleeper].connection.is_none() {
            break;
        }
    }
    assert!(
        net.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::ConnectionClosed { reason: CloseReason::SlowConsumer, .. }))
    );
    assert!(net.clients[sleeper].connection.is_none());
    assert_eq!(net.session(talker).status(), ConnectionStatus::Connected);
}

/// A client that claims to have received everything but never reads its socket: the
/// session's own accounting believes it, so the runtime bounds its queue for the connection.
/// (The async runtimes read and write a connection on one task, so a blocked write also stops
/// the lies from being read; the thread-per-connection server reads on while its writer is
/// stuck, which is where the queue would grow.)
#[cfg(all(feature = "tokio", feature = "tungstenite"))]
#[test]
fn a_client_lying_about_what_it_received_is_closed_when_its_queue_fills() {
    use crdt_sync::blocking::BlockingServer;
    use crdt_sync::tokio::TokioClient;
    use crdt_sync::wire::DocSlot;
    use crdt_sync::{ClientSession, Document, VersionVector};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // The session believes the lie: with a 64 KiB window it never has more than that
        // beyond the last report, far below the 1 MiB limit. Only the runtime's queue grows.
        let config = ServerConfig::default()
            .with_flow_control(64 * 1024, None)
            .with_max_pending_outbound_bytes(1024 * 1024)
            .with_rate_limit(0, 0);
        let server = BlockingServer::bind("127.0.0.1:0", config).unwrap();
        let mut events = server.events();
        let url = format!("ws://{}", server.local_addr());

        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let (mut sink, stream) = ws.split();
        let frame = encode_frame(&[
            Message::Hello {
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                peer: PeerId::new(66),
                client_name: "liar".into(),
                token: vec![],
            },
            Message::Subscribe { doc: DocSlot(0), name: "doc".into(), version: VersionVector::new() },
        ]);
        sink.send(WsMessage::Binary(frame.into())).await.unwrap();
        // Never read: `stream` is kept, unpolled, so the socket's buffers fill up.
        let _unread = stream;
        let liar = tokio::spawn(async move {
            loop {
                let lie = encode_frame(&[Message::Received { bytes: u64::MAX / 2 }]);
                if sink.send(WsMessage::Binary(lie.into())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });

        let writer =
            TokioClient::connect(url.as_str(), ClientSession::new(PeerId::new(1), ClientConfig::default()));
        writer.subscribe("doc", Document::new(PeerId::new(1))).await;
        // Random letters: compression must not shrink what piles up.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = move || -> String {
            (0..64 * 1024)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'a' + (seed % 26) as u8)
                })
                .collect()
        };
        let closed = async {
            loop {
                match events.recv().await {
                    Ok(ServerEvent::ConnectionClosed { reason: CloseReason::SlowConsumer, .. }) => return,
                    Ok(_) | Err(async_broadcast::RecvError::Overflowed(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let typing = async {
            // Far more than loopback socket buffers hold.
            for _ in 0..1_000 {
                let block = block();
                writer.edit("doc", move |d| d.transact().text("t").insert(0, &block).map(drop)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = closed => {}
            _ = typing => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(20)) => panic!("the lying client was never closed"),
        }
        // The honest writer is untouched.
        assert_eq!(writer.status(), ConnectionStatus::Connected);
        writer.wait_saved("doc").await;
        liar.abort();
        writer.close().await;
        tokio::task::spawn_blocking(move || drop(server.shutdown())).await.unwrap();
    });
}

/// Found by fuzzing: a reader whose copy holds edits of its own cannot merge the server's
/// snapshot once the server trimmed its history, and may not push them. It used to stay
/// behind without a word; now its copy is refused with `HistoryTrimmed`, and a fresh copy
/// syncs.
#[test]
fn a_reader_with_local_edits_behind_a_trimmed_history_is_told_and_a_fresh_copy_syncs() {
    let config = ServerConfig::default().with_compact_after_ops(Some(4));
    let mut net = net_with_tokens(config);
    let writer = net.add_client(1, with_token(token(&["doc"], false)), &["doc"]);
    for word in ["one ", "two ", "three ", "four "] {
        net.edit(writer, "doc", word);
    }
    net.advance(Duration::from_secs(1));
    assert!(net.server_events.iter().any(|e| matches!(e, ServerEvent::HistoryCompacted { .. })));

    // The reader typed into its copy before ever syncing.
    let reader = net.add_client(2, with_token(token(&["doc"], true)), &[]);
    let mut offline = crdt_sync::Document::new(PeerId::new(2));
    offline.transact().text("t").insert(0, "mine").unwrap();
    net.session(reader).subscribe("doc", offline);
    net.pump();
    assert!(
        net.clients[reader].events.iter().any(|e| matches!(
            e,
            ClientEvent::DocumentRefused { error: crdt_sync::Error::HistoryTrimmed, .. }
        )),
        "{:?}",
        net.clients[reader].events
    );
    assert_eq!(net.server_text("doc").as_deref(), Some("one two three four "));

    // A fresh copy follows the document.
    net.session(reader).subscribe("doc", crdt_sync::Document::new(PeerId::new(2)));
    net.pump();
    assert_eq!(net.text(reader, "doc"), "one two three four ");
    net.edit(writer, "doc", "five");
    assert_eq!(net.text(reader, "doc"), "one two three four five");
}

#[test]
fn a_token_replaced_during_the_handshake_is_used_when_the_old_one_is_refused() {
    let mut net = net_with_tokens(ServerConfig::default());
    let config = with_token(b"cst1.stale".to_vec());
    // The client is mid-handshake (its Hello with the stale token is on the way) when the
    // application refreshes the token.
    let peer = PeerId::new(4);
    let mut session = crdt_sync::ClientSession::new(peer, config);
    session.subscribe("doc", crdt_sync::Document::new(peer));
    let now = net.now;
    session.connect(now);
    assert_eq!(session.poll_event(), Some(ClientEvent::StatusChanged(ConnectionStatus::Connecting)));
    assert_eq!(session.poll_event(), Some(ClientEvent::OpenTransport));
    let id = net.server.accept(now);
    session.handle_connected(now);
    let hello = session.poll_transmit().unwrap();
    session.set_token(now, token(&["doc"], false));
    net.server.handle_input(now, id, &hello);
    while let Some(transmit) = net.server.poll_transmit() {
        session.handle_input(now, &transmit.frame);
    }
    let events: Vec<ClientEvent> = std::iter::from_fn(|| session.poll_event()).collect();
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::AuthenticationFailed { .. })), "{events:?}");
    assert_eq!(session.status(), ConnectionStatus::Reconnecting);
    // The next attempt, with the new token, gets in.
    net.server.handle_disconnected(now, id);
    net.clients.push(common::net::NetClient::new(session));
    net.advance(Duration::from_secs(2));
    assert_eq!(net.session(0).status(), ConnectionStatus::Connected);
}

/// On a real server: connections from one address that never start their handshake use up
/// that address's allowance, and the next is hung up on at once, before any TLS or
/// WebSocket work.
#[cfg(feature = "tokio")]
#[test]
fn a_runtime_hangs_up_on_an_address_with_too_many_unfinished_handshakes() {
    use crdt_sync::tokio::TokioServer;
    use tokio::io::AsyncReadExt;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = ServerConfig::default().with_max_unauthenticated_per_address(4);
        let server = TokioServer::bind("127.0.0.1:0", config).await.unwrap();
        let address = server.local_addr();
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // Let the server accept them all before the next one arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the extra connection is hung up on: {read:?}");
        // The first four are still waiting for their handshake.
        for stream in &mut silent {
            let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
            assert!(read.is_err(), "still open");
        }
        drop(silent);
        server.shutdown().await;
    });
}

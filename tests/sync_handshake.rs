//! Handshake scenarios: version mismatch, handshake timeout, idle connections.

mod common;

use std::time::{Duration, Instant};

use crdt_sync::wire::{
    CloseReason, ErrorCode, Message, PROTOCOL_VERSION, WireLimits, decode_frame, encode_frame,
};
use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ConnectionStatus, PeerId, ProtocolError, Server, ServerConfig,
    ServerEvent,
};

fn epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // the test's epoch; everything after is simulated
    Instant::now()
}

fn frames_to(server: &mut Server) -> Vec<Vec<Message>> {
    let mut out = Vec::new();
    while let Some(t) = server.poll_transmit() {
        out.push(decode_frame(&t.frame, &WireLimits::default()).expect("server frames decode"));
    }
    out
}

fn events(server: &mut Server) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

#[test]
fn a_client_of_another_protocol_version_gets_a_clear_error_and_a_close() {
    let now = epoch();
    let mut server = Server::in_memory(ServerConfig::default());
    let conn = server.accept(now);
    let hello = Message::Hello {
        min_version: PROTOCOL_VERSION + 1,
        max_version: PROTOCOL_VERSION + 3,
        peer: PeerId::new(9),
        client_name: "future".into(),
        token: Vec::new(),
    };
    server.handle_input(now, conn, &encode_frame(&[hello]));
    let frames = frames_to(&mut server);
    assert!(
        matches!(
            frames.as_slice(),
            [messages] if matches!(
                messages.as_slice(),
                [
                    Message::Error { code: ErrorCode::UnsupportedVersion, .. },
                    Message::Close { reason: CloseReason::UnsupportedVersion }
                ]
            )
        ),
        "{frames:?}"
    );
    let events = events(&mut server);
    assert!(events.iter().any(|e| matches!(
        e,
        ServerEvent::Error { error: ProtocolError::UnsupportedVersion { theirs, .. }, .. }
            if *theirs == (PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3)
    )));
    assert!(events.contains(&ServerEvent::ConnectionClosed {
        connection: conn,
        reason: CloseReason::UnsupportedVersion
    }));
    assert_eq!(server.connection_count(), 0);

    // A frame whose header carries a newer version gets the same answer, in a frame this
    // server can write.
    let conn = server.accept(now);
    server.handle_input(now, conn, &[PROTOCOL_VERSION + 1, 0, 1, 0]);
    let frames = frames_to(&mut server);
    assert!(matches!(frames[0][0], Message::Error { code: ErrorCode::UnsupportedVersion, .. }));
}

#[test]
fn a_client_told_of_a_version_mismatch_stops_retrying() {
    let now = epoch();
    let mut client = ClientSession::new(PeerId::new(1), ClientConfig::default());
    client.connect(now);
    client.handle_connected(now);
    while client.poll_transmit().is_some() {}
    let refusal = encode_frame(&[
        Message::Error { doc: None, code: ErrorCode::UnsupportedVersion, detail: "speaks 7".into() },
        Message::Close { reason: CloseReason::UnsupportedVersion },
    ]);
    client.handle_input(now, &refusal);
    assert_eq!(client.status(), ConnectionStatus::Error);
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Error(ProtocolError::UnsupportedVersion { .. }))));
    assert!(events.contains(&ClientEvent::CloseTransport));
    // No reconnection is ever scheduled.
    assert_eq!(client.poll_timeout(), None);
    client.handle_timeout(now + Duration::from_secs(3600));
    assert!(!std::iter::from_fn(|| client.poll_event()).any(|e| e == ClientEvent::OpenTransport));
}

#[test]
fn a_connection_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let now = epoch();
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(5));
    let mut server = Server::in_memory(config);
    let silent = server.accept(now);
    assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(5)));
    server.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(server.connection_count(), 1, "early timeouts do nothing");
    server.handle_timeout(now + Duration::from_secs(5));
    let frames = frames_to(&mut server);
    assert_eq!(frames, vec![vec![Message::Close { reason: CloseReason::HandshakeTimeout }]]);
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::ConnectionClosed { connection: silent, reason: CloseReason::HandshakeTimeout }]
    );
}

#[test]
fn a_client_whose_handshake_is_never_answered_reconnects() {
    let now = epoch();
    let config = ClientConfig::default().with_handshake_timeout(Duration::from_secs(3));
    let mut client = ClientSession::new(PeerId::new(1), config);
    client.connect(now);
    client.handle_connected(now);
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
    assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(3)));
    client.handle_timeout(now + Duration::from_secs(3));
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Error(ProtocolError::Timeout(_)))));
    assert!(events.contains(&ClientEvent::CloseTransport));
    assert_eq!(client.status(), ConnectionStatus::Reconnecting);
    let retry = client.poll_timeout().expect("a reconnection is scheduled");
    client.handle_timeout(retry);
    assert_eq!(client.poll_event(), Some(ClientEvent::OpenTransport));
}

#[test]
fn the_server_drops_a_client_that_goes_silent() {
    let now = epoch();
    let config = ServerConfig::default().with_idle_timeout(Duration::from_secs(30));
    let mut server = Server::in_memory(config);
    let conn = server.accept(now);
    let hello = Message::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        peer: PeerId::new(5),
        client_name: String::new(),
        token: Vec::new(),
    };
    server.handle_input(now, conn, &encode_frame(&[hello]));
    frames_to(&mut server);
    let later = now + Duration::from_secs(20);
    server.handle_input(later, conn, &encode_frame(&[Message::Ping { nonce: 1 }]));
    assert_eq!(frames_to(&mut server), vec![vec![Message::Pong { nonce: 1 }]]);
    // Silence is measured from the last frame heard.
    server.handle_timeout(later + Duration::from_secs(29));
    assert_eq!(server.connection_count(), 1);
    server.handle_timeout(later + Duration::from_secs(30));
    assert_eq!(server.connection_count(), 0);
    assert!(
        events(&mut server)
            .contains(&ServerEvent::ConnectionClosed { connection: conn, reason: CloseReason::IdleTimeout })
    );
}

#[test]
fn a_live_client_pings_and_is_never_dropped_as_idle() {
    let mut sim = common::sim::Sim::new(1, 2, &["doc"], common::sim::Faults::none());
    sim.run_for(Duration::from_secs(600));
    for i in 0..2 {
        assert_eq!(sim.client(i).status(), ConnectionStatus::Connected);
    }
    assert!(!sim.server_events.iter().any(|e| matches!(e, ServerEvent::ConnectionClosed { .. })));
    // Ten minutes of quiet cost a ping and a pong every 15 s, and the window reports.
    assert!(sim.stats.frames_up < 2 * 2 * 600 / 15 + 10, "{:?}", sim.stats);
}

#[test]
fn a_client_follows_a_shorter_ping_interval_asked_by_the_server() {
    let server = ServerConfig::default()
        .with_ping_interval(Duration::from_secs(2))
        .with_idle_timeout(Duration::from_secs(5));
    let mut sim = common::sim::Sim::with_configs(2, 1, &["doc"], common::sim::Faults::none(), server, |_| {
        ClientConfig::default()
    });
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.client(0).status(), ConnectionStatus::Connected);
    assert!(!sim.server_events.iter().any(|e| matches!(e, ServerEvent::ConnectionClosed { .. })));
}

//! Hostile bytes: no input panics either session, a malformed frame closes only its own
//! connection with a typed error, and everything the sessions send still decodes.

mod common;

use std::time::{Duration, Instant};

use crdt_sync::wire::{
    CloseReason, DocSlot, Message, PROTOCOL_VERSION, WireLimits, decode_frame, encode_frame,
};
use crdt_sync::{
    Awareness, AwarenessConfig, AwarenessServer, ClientConfig, ClientEvent, ClientSession, ConnectionId,
    Document, PeerId, ProtocolError, Server, ServerConfig, ServerEvent,
};
use proptest::prelude::*;

#[test]
fn sessions_are_send_and_small_enough_to_move() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ClientSession>();
    assert_send::<Server>();
    assert_send::<ClientEvent>();
    assert_send::<ServerEvent>();
}

fn epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    Instant::now()
}

fn hello(peer: u64) -> Vec<u8> {
    encode_frame(&[Message::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        peer: PeerId::new(peer),
        client_name: String::new(),
        token: Vec::new(),
    }])
}

/// Frames a real client sends: handshake, subscription, a few changes.
fn valid_client_frames() -> Vec<Vec<u8>> {
    let now = epoch();
    let mut client = ClientSession::new(PeerId::new(7), ClientConfig::default());
    client.subscribe("doc", Document::new(PeerId::new(7)));
    client.add_plugin(Awareness::<String>::new(AwarenessConfig::default()));
    let mut server = Server::in_memory(ServerConfig::default());
    server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let conn = server.accept(now);
    client.connect(now);
    client.handle_connected(now);
    let mut frames = Vec::new();
    for round in 0..6 {
        // Far enough apart that the awareness throttle lets every state out at once.
        let now = now + Duration::from_secs(round);
        if round >= 2 {
            let awareness = client.plugin_mut::<Awareness<String>>().unwrap();
            awareness.set_local_state(now, "doc", format!("typing, round {round}"));
            let doc = client.document_mut("doc").unwrap();
            let len = doc.text("t").len();
            let mut txn = doc.transact();
            txn.text("t").insert(len, "héllo").unwrap();
            txn.map::<String, i64>("m").insert(&format!("k{round}"), &(round as i64)).unwrap();
        }
        while let Some(frame) = client.poll_transmit() {
            server.handle_input(now, conn, &frame);
            frames.push(frame);
        }
        while let Some(t) = server.poll_transmit() {
            client.handle_input(now, &t.frame);
        }
    }
    let plugin_messages = frames
        .iter()
        .flat_map(|f| decode_frame(f, &WireLimits::default()).unwrap())
        .filter(|m| matches!(m, Message::Plugin { .. }))
        .count();
    assert_eq!(plugin_messages, 4, "the seed frames carry awareness states");
    frames
}

fn check_outputs(server: &mut Server) {
    while let Some(t) = server.poll_transmit() {
        decode_frame(&t.frame, &WireLimits::default()).expect("every frame the server sends decodes");
    }
    while server.poll_event().is_some() {}
}

/// A server with one well-behaved client and one connection that receives `inputs`.
fn feed_server(inputs: &[Vec<u8>]) {
    let now = epoch();
    let mut server = Server::in_memory(ServerConfig::default());
    server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let good = server.accept(now);
    server.handle_input(now, good, &hello(1));
    let subscribe = Message::Subscribe { doc: DocSlot(0), name: "doc".into(), version: Default::default() };
    server.handle_input(now, good, &encode_frame(&[subscribe]));
    check_outputs(&mut server);
    let bad = server.accept(now);
    for (i, input) in inputs.iter().enumerate() {
        let t = now + Duration::from_millis(i as u64);
        server.handle_input(t, bad, input);
        check_outputs(&mut server);
        server.handle_timeout(t);
        check_outputs(&mut server);
    }
    // The good connection is still served.
    server.handle_input(now, good, &encode_frame(&[Message::Ping { nonce: 42 }]));
    let mut pong = false;
    while let Some(t) = server.poll_transmit() {
        let messages = decode_frame(&t.frame, &WireLimits::default()).unwrap();
        pong |= t.connection == good && messages.contains(&Message::Pong { nonce: 42 });
    }
    assert!(pong, "a misbehaving connection must not disturb the others");
}

fn feed_client(inputs: &[Vec<u8>]) {
    let now = epoch();
    let mut client = ClientSession::new(PeerId::new(3), ClientConfig::default());
    client.subscribe("doc", Document::new(PeerId::new(3)));
    client.add_plugin(Awareness::<String>::new(AwarenessConfig::default()));
    client.connect(now);
    client.handle_connected(now);
    for (i, input) in inputs.iter().enumerate() {
        let t = now + Duration::from_millis(i as u64);
        client.handle_input(t, input);
        client.handle_timeout(t);
        while let Some(frame) = client.poll_transmit() {
            decode_frame(&frame, &WireLimits::default()).expect("every frame the client sends decodes");
        }
        while let Some(event) = client.poll_event() {
            if event == ClientEvent::OpenTransport {
                client.handle_connected(t);
            }
        }
    }
}

fn mutated(frames: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let count = frames.len();
    proptest::collection::vec((0..count, any::<u16>(), any::<u8>(), 0..4u8), 1..12).prop_map(move |edits| {
        edits
            .into_iter()
            .map(|(which, at, byte, how)| {
                let mut frame = frames[which].clone();
                let at = usize::from(at) % frame.len().max(1);
                match how {
                    0 if !frame.is_empty() => frame[at] = byte,
                    1 => frame.truncate(at),
                    2 => frame.insert(at.min(frame.len()), byte),
                    _ => {}
                }
                frame
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(common::proptest_config(256, file!()))]

    #[test]
    fn random_bytes_never_panic_either_side(inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
        let mut with_hello = vec![hello(2)];
        with_hello.extend(inputs.iter().cloned());
        feed_server(&inputs);
        feed_server(&with_hello);
        feed_client(&inputs);
    }

    #[test]
    fn mutated_valid_frames_never_panic_either_side(inputs in mutated(valid_client_frames())) {
        feed_server(&inputs);
        feed_client(&inputs);
    }
}

#[test]
fn a_malformed_frame_is_an_error_event_and_a_clean_close() {
    let now = epoch();
    let mut server = Server::in_memory(ServerConfig::default());
    let bad = server.accept(now);
    server.handle_input(now, bad, &hello(1));
    check_outputs(&mut server);
    server.handle_input(now, bad, &[PROTOCOL_VERSION, 0, 1, 5, 0, 200]);
    let mut frames = Vec::new();
    while let Some(t) = server.poll_transmit() {
        frames.push((t.connection, decode_frame(&t.frame, &WireLimits::default()).unwrap()));
    }
    assert!(
        matches!(frames.as_slice(), [(c, m)] if *c == bad && m.last() == Some(&Message::Close { reason: CloseReason::ProtocolViolation }))
    );
    let events: Vec<ServerEvent> = std::iter::from_fn(|| server.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, ServerEvent::Error { connection, error: ProtocolError::Decode(_) } if *connection == bad)));
    assert!(events.contains(&ServerEvent::ConnectionClosed {
        connection: bad,
        reason: CloseReason::ProtocolViolation
    }));
    // Input for the closed connection is ignored.
    server.handle_input(now, bad, &hello(1));
    server.handle_input(now, ConnectionId(999), &hello(1));
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.connection_count(), 0);
}

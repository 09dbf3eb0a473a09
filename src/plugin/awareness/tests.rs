//! The awareness plugins alone, driven by hand: throttling, coalescing, expiry and bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Awareness, AwarenessConfig, AwarenessEvent, AwarenessServer, WireEntry, WireMessage};
use crate::plugin::{ClientPlugin, PluginError, Recipients, ServerPlugin, decode_message, encode_message};
use crate::{ConnectionId, PeerId};

const MS: Duration = Duration::from_millis(1);

fn doc() -> Arc<str> {
    Arc::from("d")
}

#[allow(clippy::disallowed_methods)] // a test's epoch; everything after is relative to it
fn epoch() -> Instant {
    Instant::now()
}

fn sent(client: &mut Awareness<u32>) -> Vec<(u64, Option<u32>)> {
    std::iter::from_fn(|| client.poll_message())
        .map(|m| match decode_message::<WireMessage>(&m.body).unwrap() {
            WireMessage::Set { clock, state } => (clock, state.map(|b| decode_message::<u32>(&b).unwrap())),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn local_updates_leave_on_the_leading_and_trailing_edge_only() {
    let t0 = epoch();
    let mut client = Awareness::<u32>::new(AwarenessConfig::default());
    client.set_local_state(t0, "d", 1);
    assert!(sent(&mut client).is_empty(), "nothing leaves before the document is synced");
    client.on_subscribed(t0, &doc());
    assert_eq!(sent(&mut client), vec![(1, Some(1))], "the state goes out once synced");

    client.set_local_state(t0 + 60 * MS, "d", 2);
    assert_eq!(sent(&mut client), vec![(2, Some(2))], "leading edge: at once");
    for (i, v) in [3, 4, 5].into_iter().enumerate() {
        client.set_local_state(t0 + (70 + 10 * i as u32) * MS, "d", v);
    }
    assert!(sent(&mut client).is_empty(), "inside the throttle interval");
    assert_eq!(client.poll_timeout(), Some(t0 + 110 * MS));
    client.handle_timeout(t0 + 109 * MS);
    assert!(sent(&mut client).is_empty(), "early timeouts do nothing");
    client.handle_timeout(t0 + 110 * MS);
    assert_eq!(sent(&mut client), vec![(5, Some(5))], "trailing edge: only the latest");

    // Unchanged, it is renewed every 15 s; cleared, it leaves.
    assert_eq!(client.poll_timeout(), Some(t0 + 110 * MS + Duration::from_secs(15)));
    client.handle_timeout(t0 + 110 * MS + Duration::from_secs(15));
    assert_eq!(sent(&mut client), vec![(5, Some(5))]);
    client.clear_local_state(t0 + Duration::from_secs(20), "d");
    assert_eq!(sent(&mut client), vec![(6, None)]);
    assert_eq!(client.poll_timeout(), None, "nothing to renew");
}

/// One `States` message as a test reads it: recipient, whether full, and the entries.
type Sent = (ConnectionId, bool, Vec<(PeerId, Option<Vec<u8>>)>);

fn states_to(server: &mut AwarenessServer) -> Vec<Sent> {
    std::iter::from_fn(|| server.poll_message())
        .map(|m| {
            let Recipients::Connection(to) = m.to else { panic!("{:?}", m.to) };
            match decode_message::<WireMessage>(&m.body).unwrap() {
                WireMessage::States { full, entries } => {
                    (to, full, entries.into_iter().map(|e| (e.peer, e.state)).collect())
                }
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

fn set(clock: u64, state: &[u8]) -> Vec<u8> {
    encode_message(&WireMessage::Set { clock, state: Some(state.to_vec()) })
}

#[test]
fn the_server_coalesces_and_expires() {
    let t0 = epoch();
    let config = AwarenessConfig::default();
    let mut server = AwarenessServer::new(config.clone());
    let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
    let (pa, pb, pc) = (PeerId::new(1), PeerId::new(2), PeerId::new(3));
    for (conn, peer) in [(a, pa), (b, pb), (c, pc)] {
        server.on_subscribed(t0, conn, peer, &doc());
    }
    assert_eq!(states_to(&mut server).len(), 3, "each subscriber gets the (empty) full state");

    // The first change leaves at once, to the others only.
    server.on_message(t0, a, pa, Some(&doc()), &set(1, b"a1")).unwrap();
    let out = states_to(&mut server);
    assert_eq!(
        out,
        vec![(b, false, vec![(pa, Some(b"a1".to_vec()))]), (c, false, vec![(pa, Some(b"a1".to_vec()))])]
    );

    // The next ones within the interval are gathered into one message per subscriber.
    server.on_message(t0 + 10 * MS, a, pa, Some(&doc()), &set(2, b"a2")).unwrap();
    server.on_message(t0 + 20 * MS, b, pb, Some(&doc()), &set(1, b"b1")).unwrap();
    server.on_message(t0 + 30 * MS, a, pa, Some(&doc()), &set(3, b"a3")).unwrap();
    assert!(states_to(&mut server).is_empty());
    assert_eq!(server.poll_timeout(), Some(t0 + 50 * MS));
    server.handle_timeout(t0 + 50 * MS);
    let out = states_to(&mut server);
    assert_eq!(
        out,
        vec![
            (a, false, vec![(pb, Some(b"b1".to_vec()))]),
            (b, false, vec![(pa, Some(b"a3".to_vec()))]),
            (c, false, vec![(pa, Some(b"a3".to_vec())), (pb, Some(b"b1".to_vec()))]),
        ]
    );

    // A renewal (same clock, same state) is not forwarded.
    server.on_message(t0 + Duration::from_secs(15), b, pb, Some(&doc()), &set(1, b"b1")).unwrap();
    assert!(states_to(&mut server).is_empty());

    // `a` stops renewing: expired 30 s after its last message; `b` renewed, so it stays.
    server.handle_timeout(t0 + 30 * MS + Duration::from_secs(30));
    let out = states_to(&mut server);
    assert_eq!(out, vec![(b, false, vec![(pa, None)]), (c, false, vec![(pa, None)])]);
    assert_eq!(server.present("d").collect::<Vec<_>>(), vec![pb]);

    // A disconnect removes the state at once.
    server.on_disconnected(t0 + Duration::from_secs(40), b, pb);
    let out = states_to(&mut server);
    assert_eq!(out, vec![(a, false, vec![(pb, None)]), (c, false, vec![(pb, None)])]);
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let t0 = epoch();
    let mut server = AwarenessServer::new(AwarenessConfig::default().with_max_state_bytes(8));
    let (a, pa) = (ConnectionId(1), PeerId::new(1));
    server.on_subscribed(t0, a, pa, &doc());
    let _ = states_to(&mut server);
    for body in [vec![0xff; 3], vec![], set(1, b"far too many bytes")] {
        let result = server.on_message(t0, a, pa, Some(&doc()), &body);
        assert!(matches!(result, Err(PluginError::Malformed(_) | PluginError::Refused(_))), "{result:?}");
    }
    assert!(matches!(server.on_message(t0, a, pa, None, &set(1, b"x")), Err(PluginError::Malformed(_))));
    assert_eq!(server.present("d").count(), 0);

    let mut client = Awareness::<u32>::new(AwarenessConfig::default());
    client.on_subscribed(t0, &doc());
    let good = WireEntry { peer: PeerId::new(2), clock: 1, state: Some(encode_message(&7u32)) };
    let bad = WireEntry { peer: PeerId::new(3), clock: 1, state: Some(vec![0xff; 9]) };
    let message = encode_message(&WireMessage::States { full: false, entries: vec![good, bad] });
    assert!(matches!(client.on_message(t0, Some(&doc()), &message), Err(PluginError::Malformed(_))));
    assert_eq!(client.states("d").count(), 0, "a malformed entry rejects the whole message");
    assert_eq!(client.poll_event(), None);
    let set_message = set(1, b"x");
    assert!(matches!(client.on_message(t0, Some(&doc()), &set_message), Err(PluginError::Refused(_))));
}

#[test]
fn remote_states_outlive_a_short_disconnect_but_not_the_timeout() {
    let t0 = epoch();
    let mut client = Awareness::<u32>::new(AwarenessConfig::default());
    client.on_subscribed(t0, &doc());
    let entry = WireEntry { peer: PeerId::new(2), clock: 1, state: Some(encode_message(&7u32)) };
    let message = encode_message(&WireMessage::States { full: false, entries: vec![entry.clone()] });
    client.on_message(t0, Some(&doc()), &message).unwrap();
    assert_eq!(client.poll_event(), Some(AwarenessEvent::Joined { document: doc(), peer: PeerId::new(2) }));

    // Back within the timeout: the full state confirms it, no flicker.
    client.on_disconnected(t0 + Duration::from_secs(1));
    client.on_subscribed(t0 + Duration::from_secs(5), &doc());
    let full = encode_message(&WireMessage::States { full: true, entries: vec![entry] });
    client.on_message(t0 + Duration::from_secs(5), Some(&doc()), &full).unwrap();
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.state_of("d", PeerId::new(2)), Some(&7));

    // Gone for longer than the timeout: remote states expire.
    client.on_disconnected(t0 + Duration::from_secs(10));
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(40)));
    client.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(client.poll_event(), Some(AwarenessEvent::Left { document: doc(), peer: PeerId::new(2) }));
    assert_eq!(client.states("d").count(), 0);
}

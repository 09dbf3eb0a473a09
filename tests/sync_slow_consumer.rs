//! Back-pressure: a reader that does not keep up never makes the server buffer without bound.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::wire::CloseReason;
use crdt_sync::{ClientConfig, ServerConfig, ServerEvent};

const WINDOW: u32 = 4096;

fn type_keystrokes(sim: &mut Sim, count: usize, max_in_flight: &mut u64) {
    for _ in 0..count {
        let len = sim.client(0).document("doc").unwrap().text("t").len();
        sim.edit(0, "doc", |d| d.transact().text("t").insert(len, "keystroke ").map(drop).unwrap());
        sim.run_for(Duration::from_millis(10));
        *max_in_flight = (*max_in_flight).max(sim.bytes_in_flight_to(1));
    }
}

#[test]
fn a_stalled_reader_gets_its_changes_merged_once_it_reads_again() {
    let server = ServerConfig::default().with_flow_control(WINDOW, None);
    let mut sim = Sim::with_configs(15, 2, &["doc"], Faults::none(), server, |_| ClientConfig::default());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.stall_client(1, Duration::from_secs(20));
    let mut max_in_flight = 0;
    type_keystrokes(&mut sim, 1500, &mut max_in_flight);
    // 15 KB were typed; what waits for the stalled reader stays within the window (plus the
    // frame that crossed it).
    assert!(max_in_flight <= u64::from(WINDOW) + 512, "{max_in_flight} bytes in flight");
    let frames_before = sim.clients[1].frames_received;
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(60)));
    let text = sim.server().document("doc").unwrap().text("t").to_string();
    assert_eq!(text.len(), 15_000);
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), text);
    // What waited in the window arrives as sent (a few bytes per keystroke); everything after
    // it arrives merged: far fewer frames than the 1,500 keystrokes.
    let catch_up = sim.clients[1].frames_received - frames_before;
    assert!(catch_up < 1500 / 4, "{catch_up} frames to catch up");
}

#[test]
fn a_reader_stalled_past_the_timeout_is_dropped_and_catches_up_later() {
    let server = ServerConfig::default().with_flow_control(WINDOW, Some(Duration::from_secs(5)));
    let mut sim = Sim::with_configs(16, 2, &["doc"], Faults::none(), server, |_| ClientConfig::default());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.stall_client(1, Duration::from_secs(12));
    let mut max_in_flight = 0;
    type_keystrokes(&mut sim, 1000, &mut max_in_flight);
    assert!(
        sim.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::ConnectionClosed { reason: CloseReason::SlowConsumer, .. }))
    );
    // The writer was never disturbed: its last keystroke is acknowledged within the ack
    // delay plus a round trip.
    sim.run_for(Duration::from_millis(50));
    assert!(sim.client(0).is_saved("doc"));
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(120)));
    let text = sim.server().document("doc").unwrap().text("t").to_string();
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), text);
}

/// Regression: the slow-consumer deadline was checked in `handle_timeout` but not reported
/// by `poll_timeout`, so a runtime sleeping until the next deadline never dropped the reader.
#[test]
fn the_slow_consumer_deadline_is_reported_by_poll_timeout() {
    use std::time::Instant;

    use crdt_sync::wire::{DocSlot, Message, PROTOCOL_VERSION, encode_frame};
    use crdt_sync::{ClientSession, Document, PeerId, Server};

    #[allow(clippy::disallowed_methods)] // the test's epoch
    let start = Instant::now();
    let limit = Duration::from_secs(5);
    let config = ServerConfig::default()
        .with_flow_control(64, Some(limit))
        .with_idle_timeout(Duration::from_secs(3600));
    let mut server = Server::in_memory(config);
    // A reader that subscribes and then never reports what it received.
    let reader = server.accept(start);
    let hello = Message::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        peer: PeerId::new(9),
        client_name: String::new(),
        token: Vec::new(),
    };
    let subscribe = Message::Subscribe { doc: DocSlot(0), name: "doc".into(), version: Default::default() };
    server.handle_input(start, reader, &encode_frame(&[hello, subscribe]));
    let mut writer = ClientSession::new(PeerId::new(1), ClientConfig::default());
    writer.subscribe("doc", Document::new(PeerId::new(1)));
    let conn = server.accept(start);
    writer.connect(start);
    writer.handle_connected(start);
    let mut now = start;
    for i in 0..200 {
        now = start + Duration::from_millis(i);
        let doc = writer.document_mut("doc").unwrap();
        let len = doc.text("t").len();
        doc.transact().text("t").insert(len, "x").unwrap();
        while let Some(frame) = writer.poll_transmit() {
            server.handle_input(now, conn, &frame);
        }
        while let Some(t) = server.poll_transmit() {
            if t.connection == conn {
                writer.handle_input(now, &t.frame);
            }
        }
    }
    // Sleep from deadline to deadline, as a runtime does: the reader must be dropped
    // within the limit.
    let mut closed = Vec::new();
    while let Some(deadline) = server.poll_timeout().filter(|d| *d <= now + limit) {
        server.handle_timeout(deadline);
        while server.poll_transmit().is_some() {}
        closed.extend(std::iter::from_fn(|| server.poll_event()));
        if server.connection_count() < 2 {
            break;
        }
    }
    assert!(
        closed.contains(&ServerEvent::ConnectionClosed {
            connection: reader,
            reason: CloseReason::SlowConsumer
        })
    );
}

/// Regression: a zero window stalled every reader forever instead of turning flow control off.
#[test]
fn a_zero_window_turns_flow_control_off() {
    let server = ServerConfig::default().with_flow_control(0, None);
    let mut sim = Sim::with_configs(19, 2, &["doc"], Faults::none(), server, |_| ClientConfig::default());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let mut max_in_flight = 0;
    type_keystrokes(&mut sim, 100, &mut max_in_flight);
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let text = sim.server().document("doc").unwrap().text("t").to_string();
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), text);
    assert_eq!(text.len(), 1000);
}

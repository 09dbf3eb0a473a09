//! Reconnection: offline edits reach everyone, backoff stays within its bounds.

mod common;

use std::time::{Duration, Instant};

use common::sim::{Faults, Sim};
use crdt_sync::{ClientConfig, ClientEvent, ClientSession, ConnectionStatus, PeerId};

#[test]
fn edits_made_offline_are_pushed_on_reconnect() {
    let mut sim = Sim::new(3, 2, &["doc"], Faults::none());
    sim.run_for(Duration::from_secs(1));
    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "online ").map(drop).unwrap());
    sim.run_for(Duration::from_secs(1));

    // Client 0 loses the server for a minute (it cannot reconnect) and keeps typing.
    sim.restart_server(Duration::from_secs(60));
    for word in ["one ", "two ", "three "] {
        let len = sim.client(0).document("doc").unwrap().text("t").len();
        sim.edit(0, "doc", |d| d.transact().text("t").insert(len, word).map(drop).unwrap());
        sim.run_for(Duration::from_secs(10));
        assert_ne!(sim.client(0).status(), ConnectionStatus::Connected);
        assert!(!sim.client(0).is_saved("doc"), "unsent edits are not saved");
    }
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(120)));
    let expected = "online one two three ";
    assert_eq!(sim.server().document("doc").unwrap().text("t").to_string(), expected);
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), expected);
    assert!(
        sim.client_events.iter().any(|(c, e)| *c == 0 && *e == ClientEvent::Saved { document: "doc".into() })
    );
}

fn open_transport_times(mut client: ClientSession, start: Instant, attempts: usize) -> Vec<Duration> {
    client.connect(start);
    let mut now = start;
    let mut times = Vec::new();
    while times.len() < attempts {
        match client.poll_event() {
            Some(ClientEvent::OpenTransport) => {
                times.push(now - start);
                // The server is unreachable: every attempt fails at once.
                client.handle_disconnected(now);
            }
            Some(_) => {}
            None => match client.poll_timeout() {
                Some(next) => {
                    now = next;
                    client.handle_timeout(now);
                }
                None => break,
            },
        }
    }
    times
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_cap() {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    let start = Instant::now();
    let config =
        ClientConfig::default().with_reconnect(Duration::from_millis(100), Duration::from_secs(5), None);
    let times =
        open_transport_times(ClientSession::new(PeerId::new(1), config.clone().with_rng_seed(1)), start, 15);
    assert_eq!(times.len(), 15, "reconnection is unlimited by default");
    assert_eq!(times[0], Duration::ZERO, "the first attempt is immediate");
    for (attempt, pair) in times.windows(2).enumerate() {
        let delay = (pair[1] - pair[0]).as_millis() as u64;
        let nominal = (100u64 << attempt.min(20)).min(5000);
        assert!(
            delay >= nominal / 2 && delay <= nominal,
            "attempt {}: {delay} ms, nominal {nominal}",
            attempt + 1
        );
    }
    // Jitter comes from the seed: another seed spreads the same client differently, the
    // same seed replays exactly.
    let other =
        open_transport_times(ClientSession::new(PeerId::new(1), config.clone().with_rng_seed(2)), start, 15);
    let again = open_transport_times(ClientSession::new(PeerId::new(1), config.with_rng_seed(1)), start, 15);
    assert_ne!(times, other);
    assert_eq!(times, again);
}

#[test]
fn a_capped_client_gives_up_and_says_so() {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    let start = Instant::now();
    let config =
        ClientConfig::default().with_reconnect(Duration::from_millis(100), Duration::from_secs(1), Some(3));
    let mut client = ClientSession::new(PeerId::new(1), config);
    client.connect(start);
    let mut now = start;
    let mut opens = 0;
    loop {
        while let Some(event) = client.poll_event() {
            if event == ClientEvent::OpenTransport {
                opens += 1;
                client.handle_disconnected(now);
            }
        }
        match client.poll_timeout() {
            Some(next) => {
                now = next;
                client.handle_timeout(now);
            }
            None => break,
        }
    }
    assert_eq!(opens, 4, "the first attempt and three retries");
    assert_eq!(client.status(), ConnectionStatus::Disconnected);
}

#[test]
fn a_transport_error_is_reported_and_retried_like_a_lost_connection() {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    let start = Instant::now();
    let config =
        ClientConfig::default().with_reconnect(Duration::from_millis(100), Duration::from_secs(1), None);
    let mut client = ClientSession::new(PeerId::new(1), config);
    client.connect(start);
    while client.poll_event().is_some() {}
    client.handle_transport_error(start, "invalid peer certificate: UnknownIssuer");
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        events.first(),
        Some(&ClientEvent::TransportFailed { detail: "invalid peer certificate: UnknownIssuer".into() }),
        "{events:?}"
    );
    assert_eq!(client.status(), ConnectionStatus::Reconnecting, "still trying: {events:?}");
    // The next attempt comes on the backoff schedule, as after any lost connection.
    let next = client.poll_timeout().expect("a retry is scheduled");
    assert!(next - start <= Duration::from_millis(100));
    client.handle_timeout(next);
    assert!(std::iter::from_fn(|| client.poll_event()).any(|e| e == ClientEvent::OpenTransport));
}

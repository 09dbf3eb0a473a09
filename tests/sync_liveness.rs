//! Liveness: a client that hears nothing after a ping reconnects.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{ClientConfig, ClientEvent, ConnectionStatus, ProtocolError, ServerConfig};

#[test]
fn a_silent_server_is_detected_by_the_ping_timeout() {
    let client = ClientConfig::default().with_ping(Duration::from_secs(5), Duration::from_secs(3));
    let mut sim =
        Sim::with_configs(14, 1, &["doc"], Faults::none(), ServerConfig::default(), move |_| client.clone());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let start = sim.now;
    // The connection stays open but nothing gets through to the client any more (a half-open
    // TCP connection, a hung proxy).
    sim.stall_client(0, Duration::from_secs(3600));
    sim.run_for(Duration::from_secs(7));
    assert_eq!(sim.client(0).status(), ConnectionStatus::Connected, "the ping is not yet overdue");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.client(0).status(), ConnectionStatus::Reconnecting, "interval plus timeout have passed");
    let timed_out =
        sim.client_events.iter().any(|(_, e)| matches!(e, ClientEvent::Error(ProtocolError::Timeout(_))));
    assert!(timed_out);
    assert!(sim.now - start <= Duration::from_secs(9));
}

//! Plugins defined here, outside the crate: a chat with its own message types, and a server
//! plugin that vetoes changes.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sim::{Faults, Sim};
use crdt_sync::plugin::{decode_message, encode_message};
use crdt_sync::wire::ErrorCode;
use crdt_sync::{
    Change, ClientEvent, ClientPlugin, ClientPluginMessage, ConnectionId, ConnectionStatus, ContainerId,
    PeerId, PluginError, PluginId, ProtocolError, Recipients, ServerEvent, ServerPlugin, ServerPluginMessage,
};
use serde::{Deserialize, Serialize};

const CHAT: PluginId = PluginId(100);
const DOC: &str = "room";

#[derive(Debug, Serialize, Deserialize)]
enum ChatMessage {
    /// Client to server.
    Say { text: String },
    /// Server to clients.
    Said { from: PeerId, text: String },
}

#[derive(Debug, Default)]
struct ChatClient {
    outbox: VecDeque<ClientPluginMessage>,
    /// Document, author, text.
    heard: Vec<(Option<String>, PeerId, String)>,
}

impl ChatClient {
    fn say(&mut self, document: Option<&str>, text: &str) {
        let body = encode_message(&ChatMessage::Say { text: text.to_owned() });
        self.outbox.push_back(ClientPluginMessage::new(document.map(Arc::from), body));
    }
}

impl ClientPlugin for ChatClient {
    fn id(&self) -> PluginId {
        CHAT
    }

    fn on_message(
        &mut self,
        _now: Instant,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError> {
        match decode_message(body)? {
            ChatMessage::Said { from, text } => {
                self.heard.push((document.map(|d| d.to_string()), from, text));
                Ok(())
            }
            ChatMessage::Say { .. } => Err(PluginError::Refused("server-bound".into())),
        }
    }

    fn poll_message(&mut self) -> Option<ClientPluginMessage> {
        self.outbox.pop_front()
    }
}

/// Relays what one client says: to the document's other subscribers, or to everyone.
#[derive(Debug, Default)]
struct ChatServer {
    outbox: VecDeque<ServerPluginMessage>,
}

impl ServerPlugin for ChatServer {
    fn id(&self) -> PluginId {
        CHAT
    }

    fn on_message(
        &mut self,
        _now: Instant,
        from: ConnectionId,
        peer: PeerId,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError> {
        let ChatMessage::Say { text } = decode_message(body)? else {
            return Err(PluginError::Refused("client-bound".into()));
        };
        let body = encode_message(&ChatMessage::Said { from: peer, text });
        let to = match document {
            Some(_) => Recipients::Subscribers { except: Some(from) },
            None => Recipients::Everyone { except: Some(from) },
        };
        self.outbox.push_back(ServerPluginMessage::new(to, document.cloned(), body));
        Ok(())
    }

    fn poll_message(&mut self) -> Option<ServerPluginMessage> {
        self.outbox.pop_front()
    }
}

fn chat_sim(seed: u64, clients: usize, with_server_plugin: bool) -> Sim {
    let mut sim = Sim::new(seed, clients, &[DOC], Faults::none());
    if with_server_plugin {
        sim.set_server_setup(|server| {
            server.add_plugin(ChatServer::default());
        });
    }
    for i in 0..clients {
        sim.client_mut(i).add_plugin(ChatClient::default());
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

/// What a client heard, sorted (two senders' messages race through the network).
fn heard(sim: &Sim, client: usize) -> Vec<(Option<String>, PeerId, String)> {
    let mut heard = sim.client(client).plugin::<ChatClient>().unwrap().heard.clone();
    heard.sort();
    heard
}

#[test]
fn a_chat_plugin_round_trips_through_the_server() {
    let mut sim = chat_sim(1, 3, true);
    sim.client_mut(0).plugin_mut::<ChatClient>().unwrap().say(Some(DOC), "hello room");
    sim.client_mut(1).plugin_mut::<ChatClient>().unwrap().say(None, "hello everyone");
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    let from = |client: u64| PeerId::new(client + 1);
    assert_eq!(
        heard(&sim, 1),
        vec![(Some(DOC.into()), from(0), "hello room".into())],
        "the other subscriber hears the room; its own broadcast is not echoed"
    );
    assert_eq!(
        heard(&sim, 2),
        vec![(None, from(1), "hello everyone".into()), (Some(DOC.into()), from(0), "hello room".into())]
    );
    assert_eq!(heard(&sim, 0), vec![(None, from(1), "hello everyone".into())]);
    // The chat did not disturb the document sync.
    sim.edit(2, DOC, |d| d.transact().text("t").insert(0, "still syncing").map(drop).unwrap());
    assert!(sim.run_until_settled(&[DOC], Duration::from_secs(5)));
}

#[test]
fn an_unknown_plugin_is_a_typed_error_not_a_dropped_connection() {
    let mut sim = chat_sim(2, 2, false);
    sim.client_mut(0).plugin_mut::<ChatClient>().unwrap().say(Some(DOC), "anyone?");
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    let refused = sim.client_events.iter().any(|(client, event)| {
        *client == 0
            && matches!(
                event,
                ClientEvent::Error(ProtocolError::Refused { code: ErrorCode::UnknownPlugin, .. })
            )
    });
    assert!(refused, "{:?}", sim.client_events);
    assert_eq!(sim.client(0).status(), ConnectionStatus::Connected);
    assert!(!sim.server_events.iter().any(|e| matches!(e, ServerEvent::ConnectionClosed { .. })));
    sim.edit(0, DOC, |d| d.transact().text("t").insert(0, "after").map(drop).unwrap());
    assert!(sim.run_until_settled(&[DOC], Duration::from_secs(5)));
    assert_eq!(sim.client(1).document(DOC).unwrap().text("t").to_string(), "after");
}

#[test]
fn a_malformed_plugin_message_is_refused_and_the_connection_stays() {
    let mut sim = chat_sim(3, 2, true);
    let garbage = ClientPluginMessage::new(Some(DOC.into()), vec![0xff, 0xff, 0xff]);
    sim.client_mut(0).plugin_mut::<ChatClient>().unwrap().outbox.push_back(garbage);
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    let malformed = sim.server_events.iter().any(|e| {
        matches!(e, ServerEvent::Error { error: ProtocolError::Plugin { plugin, error: PluginError::Malformed(_) }, .. } if *plugin == CHAT)
    });
    assert!(malformed, "{:?}", sim.server_events);
    assert!(sim.client_events.iter().any(|(c, e)| *c == 0
        && matches!(e, ClientEvent::Error(ProtocolError::Refused { code: ErrorCode::Malformed, .. }))));
    assert_eq!(sim.client(0).status(), ConnectionStatus::Connected);
    sim.client_mut(0).plugin_mut::<ChatClient>().unwrap().say(Some(DOC), "fine now");
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(heard(&sim, 1).len(), 1);
}

/// Vetoes every change from one replica (a read-only user), and any change to the root
/// text `locked` from anyone.
#[derive(Debug)]
struct Guard {
    read_only: PeerId,
    vetoed: u32,
}

impl ServerPlugin for Guard {
    fn id(&self) -> PluginId {
        PluginId(101)
    }

    fn on_message(
        &mut self,
        _: Instant,
        _: ConnectionId,
        _: PeerId,
        _: Option<&Arc<str>>,
        _: &[u8],
    ) -> Result<(), PluginError> {
        Err(PluginError::Refused("no messages".into()))
    }

    fn check_changes(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Arc<str>,
        changes: &[Change],
    ) -> Result<(), String> {
        let locked = ContainerId::root("locked", crdt_sync::ContainerKind::Text);
        let verdict = if peer == self.read_only {
            Err(format!("{peer:?} may only read"))
        } else if changes.iter().any(|c| c.containers().any(|id| *id == locked)) {
            Err("the locked text is locked".to_owned())
        } else {
            Ok(())
        };
        self.vetoed += u32::from(verdict.is_err());
        verdict
    }

    fn poll_message(&mut self) -> Option<ServerPluginMessage> {
        None
    }
}

#[test]
fn a_vetoed_change_reaches_no_replica() {
    let mut sim = Sim::new(4, 3, &[DOC], Faults::none());
    sim.set_server_setup(|server| {
        server.add_plugin(Guard { read_only: PeerId::new(3), vetoed: 0 });
    });
    sim.edit(0, DOC, |d| d.transact().text("t").insert(0, "shared").map(drop).unwrap());
    assert!(sim.run_until_settled(&[DOC], Duration::from_secs(5)));

    // The read-only client types; client 0 edits the locked text.
    sim.edit(2, DOC, |d| d.transact().text("t").insert(0, "INTRUSION ").map(drop).unwrap());
    sim.edit(0, DOC, |d| d.transact().text("locked").insert(0, "nope").map(drop).unwrap());
    sim.run_for(Duration::from_secs(2));

    let server_doc = sim.server().document(DOC).unwrap();
    assert_eq!(server_doc.text("t").to_string(), "shared");
    assert_eq!(server_doc.text("locked").to_string(), "");
    assert_eq!(sim.client(1).document(DOC).unwrap().text("t").to_string(), "shared");
    assert_eq!(sim.client(1).document(DOC).unwrap().text("locked").to_string(), "");
    for author in [0usize, 2] {
        let told = sim
            .client_events
            .iter()
            .any(|(c, e)| *c == author && matches!(e, ClientEvent::ChangesVetoed { .. }));
        assert!(told, "client {author} was not told: {:?}", sim.client_events);
        assert!(!sim.client(author).is_saved(DOC));
    }
    let vetoes = sim.server_events.iter().filter(|e| matches!(e, ServerEvent::ChangesVetoed { .. })).count();
    assert_eq!(vetoes, 2);
    assert_eq!(sim.server().plugin::<Guard>().unwrap().vetoed, 2);

    // The others carry on: client 1 still edits, and the server and client 1 agree.
    sim.edit(1, DOC, |d| d.transact().text("t").insert(6, "!").map(drop).unwrap());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.server().document(DOC).unwrap().text("t").to_string(), "shared!");
    assert_eq!(sim.client(1).document(DOC).unwrap().text("t").to_string(), "shared!");
    assert!(sim.client(1).is_saved(DOC));
}

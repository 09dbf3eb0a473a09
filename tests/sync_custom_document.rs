//! The engine works through `SyncDocument`: a wrapper type syncs like a plain document and
//! sees every batch the engine applies (what a journaling store needs).

use std::time::Instant;

use crdt_sync::{
    Change, ClientConfig, ClientSession, Document, Error, ImportStatus, PeerId, Server, ServerConfig,
    SyncDocument, VersionVector,
};

/// A document that counts the changes the engine applied to it.
struct Journaled {
    doc: Document,
    journal: Vec<usize>,
}

impl SyncDocument for Journaled {
    fn version(&self) -> &VersionVector {
        self.doc.version()
    }
    fn changes_since(&self, since: &VersionVector) -> Result<Vec<Change>, Error> {
        self.doc.changes_since(since)
    }
    fn apply_changes(&mut self, changes: Vec<Change>) -> Result<ImportStatus, Error> {
        let count = changes.len();
        let status = self.doc.apply_changes(changes)?;
        self.journal.push(count);
        Ok(status)
    }
    fn pending_count(&self) -> usize {
        self.doc.pending_count()
    }
    fn export_since(&self, since: &VersionVector) -> Result<Vec<u8>, Error> {
        self.doc.export_since(since)
    }
    fn encode(&self) -> Vec<u8> {
        self.doc.encode()
    }
    fn import(&mut self, update: &[u8]) -> Result<ImportStatus, Error> {
        self.doc.import(update)
    }
    fn trimmed_version(&self) -> &VersionVector {
        self.doc.trimmed_version()
    }
    fn trim_history(&mut self, version: &VersionVector) -> Result<(), Error> {
        self.doc.trim_history(version)
    }
}

#[test]
fn a_wrapped_document_syncs_and_sees_every_applied_batch() {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    let now = Instant::now();
    let mut server = Server::in_memory(ServerConfig::default().with_ack_delay(std::time::Duration::ZERO));
    let mut writer = ClientSession::new(PeerId::new(1), ClientConfig::default());
    writer.subscribe("doc", Document::new(PeerId::new(1)));
    let mut reader = ClientSession::<Journaled>::for_document_type(PeerId::new(2), ClientConfig::default());
    reader.subscribe("doc", Journaled { doc: Document::new(PeerId::new(2)), journal: Vec::new() });
    let (w, r) = (server.accept(now), server.accept(now));
    writer.connect(now);
    writer.handle_connected(now);
    reader.connect(now);
    reader.handle_connected(now);
    let pump = |writer: &mut ClientSession, reader: &mut ClientSession<Journaled>, server: &mut Server| {
        for _ in 0..4 {
            while let Some(f) = writer.poll_transmit() {
                server.handle_input(now, w, &f);
            }
            while let Some(f) = reader.poll_transmit() {
                server.handle_input(now, r, &f);
            }
            while let Some(t) = server.poll_transmit() {
                if t.connection == w {
                    writer.handle_input(now, &t.frame);
                } else {
                    reader.handle_input(now, &t.frame);
                }
            }
        }
    };
    pump(&mut writer, &mut reader, &mut server);
    for word in ["one ", "two ", "three"] {
        let doc = writer.document_mut("doc").unwrap();
        let len = doc.text("t").len();
        doc.transact().text("t").insert(len, word).unwrap();
        pump(&mut writer, &mut reader, &mut server);
    }
    let journaled = reader.document("doc").unwrap();
    assert_eq!(journaled.doc.text("t").to_string(), "one two three");
    assert_eq!(journaled.journal, [1, 1, 1], "one batch per keystroke frame");
    assert!(writer.is_saved("doc"));
}

/// A document that cannot give its history (a store that lost it): every push fails.
struct Unreadable(Document);

impl SyncDocument for Unreadable {
    fn version(&self) -> &VersionVector {
        self.0.version()
    }
    fn changes_since(&self, _since: &VersionVector) -> Result<Vec<Change>, Error> {
        Err(Error::HistoryTrimmed)
    }
    fn apply_changes(&mut self, changes: Vec<Change>) -> Result<ImportStatus, Error> {
        self.0.apply_changes(changes)
    }
    fn pending_count(&self) -> usize {
        self.0.pending_count()
    }
    fn export_since(&self, since: &VersionVector) -> Result<Vec<u8>, Error> {
        self.0.export_since(since)
    }
    fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
    fn import(&mut self, update: &[u8]) -> Result<ImportStatus, Error> {
        self.0.import(update)
    }
    fn trimmed_version(&self) -> &VersionVector {
        self.0.trimmed_version()
    }
    fn trim_history(&mut self, version: &VersionVector) -> Result<(), Error> {
        self.0.trim_history(version)
    }
}

/// A document that fails to give its changes is reported once per state, not at every
/// poll: an event loop that polls until the session is quiet must come to rest.
#[test]
fn a_document_that_cannot_give_its_changes_is_reported_once_per_edit() {
    #[allow(clippy::disallowed_methods)] // the test's epoch
    let now = Instant::now();
    let mut server = Server::in_memory(ServerConfig::default());
    let mut client = ClientSession::<Unreadable>::for_document_type(PeerId::new(1), ClientConfig::default());
    client.subscribe("doc", Unreadable(Document::new(PeerId::new(1))));
    let connection = server.accept(now);
    client.connect(now);
    client.handle_connected(now);
    let mut errors = 0;
    let mut pump = |client: &mut ClientSession<Unreadable>, server: &mut Server| {
        for _ in 0..8 {
            while let Some(frame) = client.poll_transmit() {
                server.handle_input(now, connection, &frame);
            }
            while let Some(transmit) = server.poll_transmit() {
                client.handle_input(now, &transmit.frame);
            }
            while let Some(event) = client.poll_event() {
                errors += usize::from(matches!(event, crdt_sync::ClientEvent::Error(_)));
            }
        }
        errors
    };
    assert_eq!(pump(&mut client, &mut server), 0, "nothing to push yet");
    for (typed, word) in ["one", "two"].into_iter().enumerate() {
        client.document_mut("doc").unwrap().0.transact().text("t").insert(0, word).unwrap();
        assert_eq!(pump(&mut client, &mut server), typed + 1, "one error per edit, however often polled");
    }
    assert!(!client.is_saved("doc"));
}

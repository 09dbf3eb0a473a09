//! crdt-sync's live sync: the real protocol in memory. A [`Server::in_memory`], a writer and a
//! reader [`ClientSession`] subscribed to one document, wired by direct in-process delivery:
//! every frame a side polls goes straight, in order, to the other side's `handle_input`. No
//! simulator, no latency: the writer types one trace transaction into its document, then the
//! three are pumped until none has anything to send (writer → server, server → reader and
//! server → writer acks, reader → server receipt reports), so each transaction leaves as its
//! own frame and reaches the reader before the next keystroke.
//!
//! Time is simulated: a fixed epoch plus one millisecond per transaction (as the trace tool's
//! `--via sim` types), and every side's due deadline is handled before each keystroke, so the
//! pings a 4-minute session would exchange are on the wire too.

use std::time::{Duration, Instant};

use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, PeerId, Server,
    ServerConfig, ServerEvent, Transmit,
};

use super::{FinalTexts, LiveRun, Prepared, Problem, Traffic};
use crate::trace_replay::apply_patches;

const DOC: &str = "live";
/// Simulated time between two transactions.
const KEYSTROKE: Duration = Duration::from_millis(1);

/// The three parties and what went over each link.
struct Wire {
    server: Server,
    writer: ClientSession,
    reader: ClientSession,
    writer_conn: ConnectionId,
    reader_conn: ConnectionId,
    now: Instant,
    traffic: Traffic,
}

impl Wire {
    /// Connect both clients (handshake and subscription included in the byte counts).
    fn open(epoch: Instant) -> Result<Self, Problem> {
        let mut server = Server::in_memory(ServerConfig::default());
        let mut writer = ClientSession::new(
            PeerId::new(1),
            ClientConfig::default().with_client_name("writer").with_rng_seed(1),
        );
        let mut reader = ClientSession::new(
            PeerId::new(2),
            ClientConfig::default().with_client_name("reader").with_rng_seed(2),
        );
        writer.subscribe(DOC, Document::new(PeerId::new(1)));
        reader.subscribe(DOC, Document::new(PeerId::new(2)));
        let mut conns = [ConnectionId(0); 2];
        for (session, conn) in [&mut writer, &mut reader].into_iter().zip(&mut conns) {
            session.connect(epoch);
            let mut asked = false;
            while let Some(event) = session.poll_event() {
                asked |= event == ClientEvent::OpenTransport;
            }
            if !asked {
                return Err(Problem::failed("live sync: a client did not ask for a transport"));
            }
            *conn = server.accept(epoch);
            session.handle_connected(epoch);
        }
        let mut wire = Wire {
            server,
            writer,
            reader,
            writer_conn: conns[0],
            reader_conn: conns[1],
            now: epoch,
            traffic: Traffic::default(),
        };
        wire.pump()?;
        for (who, session) in [("writer", &wire.writer), ("reader", &wire.reader)] {
            if session.status() != ConnectionStatus::Connected || !session.is_saved(DOC) {
                return Err(Problem::failed(format!("live sync: the {who} did not connect and sync")));
            }
        }
        Ok(wire)
    }

    /// Deliver frames until no side has anything to send; fail on any event that means the
    /// link or a document is in trouble (in-order, lossless delivery never should).
    fn pump(&mut self) -> Result<(), Problem> {
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some(frame) = self.writer.poll_transmit() {
                self.traffic.writer_frames += 1;
                self.traffic.writer_bytes += frame.len();
                self.server.handle_input(now, self.writer_conn, &frame);
                moved = true;
            }
            while let Some(frame) = self.reader.poll_transmit() {
                self.traffic.from_reader_bytes += frame.len();
                self.server.handle_input(now, self.reader_conn, &frame);
                moved = true;
            }
            while let Some(Transmit { connection, frame, .. }) = self.server.poll_transmit() {
                if connection == self.writer_conn {
                    self.traffic.to_writer_bytes += frame.len();
                    self.writer.handle_input(now, &frame);
                } else if connection == self.reader_conn {
                    self.traffic.reader_frames += 1;
                    self.traffic.reader_bytes += frame.len();
                    self.reader.handle_input(now, &frame);
                }
                moved = true;
            }
            for (who, session) in [("writer", &mut self.writer), ("reader", &mut self.reader)] {
                while let Some(event) = session.poll_event() {
                    match event {
                        ClientEvent::Error(_)
                        | ClientEvent::DocumentRefused { .. }
                        | ClientEvent::OutOfSync { .. }
                        | ClientEvent::OpenTransport
                        | ClientEvent::CloseTransport
                        | ClientEvent::StatusChanged(
                            ConnectionStatus::Reconnecting
                            | ConnectionStatus::Disconnected
                            | ConnectionStatus::Error,
                        ) => return Err(Problem::failed(format!("live sync, {who}: {event:?}"))),
                        _ => {}
                    }
                }
            }
            while let Some(event) = self.server.poll_event() {
                if let ServerEvent::Error { .. }
                | ServerEvent::ConnectionClosed { .. }
                | ServerEvent::OutOfSync { .. } = event
                {
                    return Err(Problem::failed(format!("live sync, server: {event:?}")));
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// Move the clock one keystroke on and handle whatever deadline that passes (pings).
    fn tick(&mut self) {
        self.now += KEYSTROKE;
        let now = self.now;
        if self.writer.poll_timeout().is_some_and(|at| at <= now) {
            self.writer.handle_timeout(now);
        }
        if self.reader.poll_timeout().is_some_and(|at| at <= now) {
            self.reader.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|at| at <= now) {
            self.server.handle_timeout(now);
        }
    }

    fn writer_doc(&mut self) -> Result<&mut Document, Problem> {
        self.writer
            .document_mut(DOC)
            .ok_or_else(|| Problem::failed("live sync: the writer lost its document"))
    }
}

/// One live-sync run over `t` (a sequential trace).
pub fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
    if let Some(p) = super::live_not_applicable(t) {
        return Err(p);
    }
    // The only clock read; everything after is the epoch plus simulated keystrokes.
    let mut wire = Wire::open(Instant::now())?;
    let total = t.trace.txns.len();
    if !t.trace.start_content.is_empty() {
        wire.writer_doc()?
            .transact()
            .text("text")
            .insert(0, &t.trace.start_content)
            .map_err(Problem::failed)?;
        wire.pump()?;
    }
    for (i, txn) in t.trace.txns.iter().enumerate() {
        super::check_deadline(i, total, "live sync")?;
        wire.tick();
        apply_patches(wire.writer_doc()?, txn).map_err(|e| Problem::failed(format!("txn {i}: {e}")))?;
        wire.pump()?;
    }
    // The server holds acks back up to its ack delay (20 ms by default) so that they ride
    // along with other frames; let that much simulated time pass for the last one.
    for _ in 0..100 {
        if wire.writer.is_saved(DOC) {
            break;
        }
        wire.tick();
        wire.pump()?;
    }
    if !wire.writer.is_saved(DOC) {
        return Err(Problem::failed("live sync: the writer's last change was not acknowledged"));
    }
    let Wire { server, writer, reader, traffic, .. } = wire;
    let finals: FinalTexts = Box::new(move || {
        let text = |doc: Option<&Document>| doc.map_or_else(String::new, |d| d.text("text").to_string());
        vec![
            ("writer", text(writer.document(DOC))),
            ("server", text(server.document(DOC))),
            ("reader", text(reader.document(DOC))),
        ]
    });
    Ok(LiveRun { traffic, finals })
}

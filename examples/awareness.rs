//! Presence over a shared text: three simulated users move their cursors (and one types)
//! while a fourth, the observer, prints everyone's position whenever it changes.
//!
//! ```text
//! cargo run --example awareness
//! ```
//!
//! Everything runs in one process on simulated time: a [`Server`] with the
//! [`AwarenessServer`] plugin, and one [`ClientSession`] with an [`Awareness`] plugin per
//! user, frames passed in memory. Cursors are [`Cursor`]s, stable positions: the observer
//! resolves them against its own copy of the text, so they stay on their characters while
//! the typist inserts before them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crdt_sync::{
    Awareness, AwarenessConfig, AwarenessEvent, AwarenessServer, ClientConfig, ClientSession, ConnectionId,
    Cursor, Document, PeerId, Server, ServerConfig,
};
use serde::{Deserialize, Serialize};

const DOC: &str = "poem";
const TEXT: &str = "text";

/// What each user shows the others.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Presence {
    name: String,
    cursor: Cursor,
}

struct User {
    name: &'static str,
    session: ClientSession,
    connection: ConnectionId,
    /// Where the user's cursor goes next time they publish it, as a character index.
    at: usize,
}

/// A tiny deterministic generator (the example must print the same run every time).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn main() {
    #[allow(clippy::disallowed_methods)] // the only clock read: simulated time starts here
    let epoch = Instant::now();
    let mut now = epoch;
    let mut server = Server::in_memory(ServerConfig::default());
    server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));

    let names = ["observer", "ana", "ben", "chloe"];
    let mut users: Vec<User> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let peer = PeerId::new(i as u64 + 1);
            let mut session = ClientSession::new(peer, ClientConfig::default().with_client_name(*name));
            session.subscribe(DOC, Document::new(peer));
            session.add_plugin(Awareness::<Presence>::new(AwarenessConfig::default()));
            session.connect(now);
            while session.poll_event().is_some() {}
            let connection = server.accept(now);
            session.handle_connected(now);
            User { name, session, connection, at: 0 }
        })
        .collect();
    pump(&mut server, &mut users, now);

    // The observer starts the text.
    let first = "Shall I compare thee to a summer's day?";
    edit(&mut users[0], |doc| doc.transact().text(TEXT).insert(0, first).map(drop).unwrap());
    pump(&mut server, &mut users, now);

    // Chloe parks her cursor on the 's' of "summer's" and leaves it there; Ben reads along,
    // a few characters at a time; Ana types a line in front of both, one character every
    // 30 ms, so their indexes shift while their cursors stay on their characters.
    let typing = "Thou art more lovely and more temperate. ";
    let (ana, ben, chloe) = (1, 2, 3);
    users[chloe].at = first.find("summer").unwrap();
    users[ben].at = first.find("compare").unwrap();
    for user in [ana, ben, chloe] {
        publish(&mut users[user], now);
    }
    let mut rng = Lcg(7);
    let mut last_printed: BTreeMap<PeerId, String> = BTreeMap::new();
    for step in 1..=150u32 {
        now = epoch + Duration::from_millis(u64::from(step) * 10);
        if step % 3 == 0
            && let Some(c) = typing.chars().nth((step / 3 - 1) as usize)
        {
            let at = users[ana].at;
            edit(&mut users[ana], |doc| {
                doc.transact().text(TEXT).insert(at, &c.to_string()).map(drop).unwrap()
            });
            users[ana].at += 1;
            publish(&mut users[ana], now);
        }
        if step % 20 == 0 {
            // Ben's cursor is where his stable position says, wherever Ana's typing moved it.
            let user = &mut users[ben];
            let text = user.session.document(DOC).unwrap().text(TEXT);
            let here = text.resolve_cursor(&current_cursor(user)).unwrap_or(0);
            user.at = (here + 1 + rng.below(5) as usize).min(text.len());
            publish(user, now);
        }
        for user in &mut users {
            if user.session.poll_timeout().is_some_and(|t| t <= now) {
                user.session.handle_timeout(now);
            }
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        pump(&mut server, &mut users, now);
        print_changes(&mut users[0], now - epoch, &mut last_printed, step % 50 == 0);
    }

    // Chloe leaves; the others see her go at the server's next flush.
    users[chloe].session.close(now);
    pump(&mut server, &mut users, now);
    users.pop();
    now += Duration::from_millis(100);
    server.handle_timeout(now);
    pump(&mut server, &mut users, now);
    print_changes(&mut users[0], now - epoch, &mut last_printed, true);
}

/// The user's own published cursor.
fn current_cursor(user: &User) -> Cursor {
    let awareness = user.session.plugin::<Awareness<Presence>>().unwrap();
    awareness.local_state(DOC).map_or(Cursor::Start, |p| p.cursor)
}

/// Publish the user's cursor at character index `user.at` of their copy.
fn publish(user: &mut User, now: Instant) {
    let cursor = user.session.document(DOC).unwrap().text(TEXT).cursor_at(user.at).unwrap();
    let presence = Presence { name: user.name.to_owned(), cursor };
    user.session.plugin_mut::<Awareness<Presence>>().unwrap().set_local_state(now, DOC, presence);
}

fn edit(user: &mut User, change: impl FnOnce(&mut Document)) {
    change(user.session.document_mut(DOC).unwrap());
}

/// Print what the observer learned: a line per awareness event, and with `everyone` a
/// line for every present user, each with the text around their cursor in the observer's
/// copy (Chloe's context stays put while her index grows).
fn print_changes(
    observer: &mut User,
    elapsed: Duration,
    names: &mut BTreeMap<PeerId, String>,
    everyone: bool,
) {
    let mut changed = Vec::new();
    let awareness = observer.session.plugin_mut::<Awareness<Presence>>().unwrap();
    while let Some(event) = awareness.poll_event() {
        match event {
            AwarenessEvent::Joined { peer, .. } => changed.push((peer, "joined")),
            AwarenessEvent::Updated { peer, .. } => changed.push((peer, "moved")),
            AwarenessEvent::Left { peer, .. } => changed.push((peer, "left")),
            _ => {}
        }
    }
    let awareness = observer.session.plugin::<Awareness<Presence>>().unwrap();
    let text = observer.session.document(DOC).unwrap().text(TEXT);
    let chars: Vec<char> = text.to_string().chars().collect();
    let describe = |presence: &Presence| {
        let at = text.resolve_cursor(&presence.cursor).unwrap_or(0);
        let before: String = chars[at.saturating_sub(14)..at].iter().collect();
        let after: String = chars[at..(at + 10).min(chars.len())].iter().collect();
        format!("{:<6} at {at:>3}  …{before}|{after}…", presence.name)
    };
    for (peer, what) in changed {
        match awareness.state_of(DOC, peer) {
            Some(presence) => {
                names.insert(peer, presence.name.clone());
                println!("{:>5} ms  {what:<7} {}", elapsed.as_millis(), describe(presence));
            }
            None => {
                let name = names.get(&peer).map_or("?", String::as_str);
                println!("{:>5} ms  {what:<7} {name}", elapsed.as_millis());
            }
        }
    }
    if everyone {
        println!("{:>5} ms  -- everyone, as the observer sees them:", elapsed.as_millis());
        for (_, presence) in awareness.states(DOC) {
            println!("{:>5} ms          {}", elapsed.as_millis(), describe(presence));
        }
    }
}

/// Deliver frames in memory until no one has anything to send.
fn pump(server: &mut Server, users: &mut [User], now: Instant) {
    loop {
        let mut moved = false;
        for user in users.iter_mut() {
            while let Some(frame) = user.session.poll_transmit() {
                server.handle_input(now, user.connection, &frame);
                moved = true;
            }
            while user.session.poll_event().is_some() {}
        }
        while let Some(transmit) = server.poll_transmit() {
            if let Some(user) = users.iter_mut().find(|u| u.connection == transmit.connection) {
                user.session.handle_input(now, &transmit.frame);
            }
            moved = true;
        }
        while server.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
}

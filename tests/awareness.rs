//! Awareness through the simulator: joiners see everyone, leavers disappear, traffic stays
//! bounded, and cursors stay on their characters.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{
    Awareness, AwarenessConfig, AwarenessEvent, AwarenessServer, ClientConfig, ClientSession, Cursor,
    Document, PeerId,
};
use serde::{Deserialize, Serialize};

const DOC: &str = "notes";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Presence {
    name: String,
    cursor: Cursor,
}

type Aw = Awareness<Presence>;

/// `clients` clients on one document, each with awareness, and the server's plugin.
fn sim_with_awareness(seed: u64, clients: usize) -> Sim {
    let mut sim = Sim::new(seed, clients, &[DOC], Faults::none());
    sim.set_server_setup(|server| {
        server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    });
    for i in 0..clients {
        sim.client_mut(i).add_plugin(Aw::new(AwarenessConfig::default()));
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

fn set_state(sim: &mut Sim, client: usize, name: &str, pos: usize) {
    let now = sim.now;
    let session = sim.client_mut(client);
    let cursor = session.document(DOC).unwrap().text("text").cursor_at(pos).unwrap();
    let presence = Presence { name: name.to_owned(), cursor };
    session.plugin_mut::<Aw>().unwrap().set_local_state(now, DOC, presence);
    sim.drain();
}

fn names_seen_by(sim: &Sim, client: usize) -> BTreeMap<PeerId, String> {
    let aw = sim.client(client).plugin::<Aw>().unwrap();
    aw.states(DOC).map(|(peer, p)| (peer, p.name.clone())).collect()
}

fn drain_events(sim: &mut Sim, client: usize) -> Vec<AwarenessEvent> {
    let aw = sim.client_mut(client).plugin_mut::<Aw>().unwrap();
    std::iter::from_fn(|| aw.poll_event()).collect()
}

#[test]
fn a_joiner_sees_everyones_state_and_they_see_it() {
    let mut sim = sim_with_awareness(1, 3);
    for i in 0..3 {
        set_state(&mut sim, i, &format!("user{i}"), 0);
    }
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(names_seen_by(&sim, i).len(), 2, "client {i} sees the two others");
    }

    let mut session = ClientSession::new(PeerId::new(50), ClientConfig::default().with_rng_seed(50));
    session.subscribe(DOC, Document::new(PeerId::new(50)));
    session.add_plugin(Aw::new(AwarenessConfig::default()));
    let joiner = sim.add_client(session);
    sim.run_for(Duration::from_secs(1));
    let seen = names_seen_by(&sim, joiner);
    let expected: BTreeMap<PeerId, String> =
        (0..3).map(|i| (PeerId::new(1 + i), format!("user{i}"))).collect();
    assert_eq!(seen, expected, "the joiner gets the full state without asking");
    let joined = drain_events(&mut sim, joiner)
        .into_iter()
        .filter(|e| matches!(e, AwarenessEvent::Joined { .. }))
        .count();
    assert_eq!(joined, 3);

    for i in 0..3 {
        drain_events(&mut sim, i);
    }
    set_state(&mut sim, joiner, "late", 0);
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(names_seen_by(&sim, i).get(&PeerId::new(50)).map(String::as_str), Some("late"));
        assert_eq!(
            drain_events(&mut sim, i),
            vec![AwarenessEvent::Joined { document: DOC.into(), peer: PeerId::new(50) }]
        );
    }
    // An explicit query answers with the same full state, and changes nothing.
    sim.client_mut(joiner).plugin_mut::<Aw>().unwrap().query(DOC);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(names_seen_by(&sim, joiner), expected);
    assert!(drain_events(&mut sim, joiner).iter().all(|e| !matches!(e, AwarenessEvent::Left { .. })));
}

#[test]
fn a_client_that_leaves_disappears_for_the_others() {
    let mut sim = sim_with_awareness(2, 3);
    for i in 0..3 {
        set_state(&mut sim, i, &format!("user{i}"), 0);
    }
    sim.run_for(Duration::from_secs(1));
    for i in 0..3 {
        drain_events(&mut sim, i);
    }

    // A lost link that comes back: the client reconnects and sends its state again.
    sim.break_client_link(2);
    sim.run_for(Duration::from_secs(5));
    for i in 0..2 {
        assert_eq!(names_seen_by(&sim, i).get(&PeerId::new(3)).map(String::as_str), Some("user2"));
        drain_events(&mut sim, i);
    }

    // Leaving (the application closes the session): gone at the next flush.
    let now = sim.now;
    sim.client_mut(2).close(now);
    sim.drain();
    sim.run_for(Duration::from_millis(200));
    for i in 0..2 {
        assert!(!names_seen_by(&sim, i).contains_key(&PeerId::new(3)), "client {i} still sees client 2");
        assert!(
            drain_events(&mut sim, i)
                .contains(&AwarenessEvent::Left { document: DOC.into(), peer: PeerId::new(3) })
        );
    }

    // Vanishing without a word: the server hears no renewal and expires the state within
    // the 30 s timeout (its connection idles out later still).
    let vanished_at = sim.now;
    sim.vanish_client(1);
    let left = sim
        .run_until_with(Duration::from_secs(60), |sim| !names_seen_by(sim, 0).contains_key(&PeerId::new(2)));
    assert!(left, "client 1 never left client 0's view");
    let took = sim.now - vanished_at;
    assert!(took <= Duration::from_secs(31), "took {took:?}");
    assert!(
        drain_events(&mut sim, 0)
            .contains(&AwarenessEvent::Left { document: DOC.into(), peer: PeerId::new(2) })
    );
}

#[test]
fn live_states_are_renewed_and_never_expire() {
    let mut sim = sim_with_awareness(3, 2);
    set_state(&mut sim, 0, "steady", 0);
    sim.run_for(Duration::from_secs(120));
    assert_eq!(names_seen_by(&sim, 1).get(&PeerId::new(1)).map(String::as_str), Some("steady"));
    let events = drain_events(&mut sim, 1);
    assert_eq!(events, vec![AwarenessEvent::Joined { document: DOC.into(), peer: PeerId::new(1) }]);
}

#[test]
fn throttling_and_coalescing_bound_the_frames() {
    const CLIENTS: usize = 20;
    let mut sim = sim_with_awareness(4, CLIENTS);
    let (up, down) = (sim.stats.frames_up, sim.stats.frames_down);
    // Every client moves its cursor 100 times in one second, 10 ms apart, all interleaved.
    for step in 0..100 {
        for client in 0..CLIENTS {
            set_state(&mut sim, client, &format!("user{client} step{step}"), 0);
        }
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_secs(1));
    let sent_up = sim.stats.frames_up - up;
    let sent_down = sim.stats.frames_down - down;
    // Throttled at 50 ms: 21 sends per client at most (leading edge plus one per interval),
    // instead of 100. Coalesced at the server, one frame per subscriber per 50 ms instead of
    // one per update per other client (2,000 × 19 = 38,000).
    let per_client = 1000 / 50 + 2;
    assert!(sent_up <= (CLIENTS * per_client) as u64, "{sent_up} frames up");
    assert!(sent_down <= (CLIENTS * per_client) as u64, "{sent_down} frames down");
    // And nothing was lost: everyone ends with everyone's last state.
    for client in 0..CLIENTS {
        let seen = names_seen_by(&sim, client);
        assert_eq!(seen.len(), CLIENTS - 1);
        for (peer, name) in seen {
            assert_eq!(name, format!("user{} step99", peer.get() - 1), "client {client}");
        }
    }
}

#[test]
fn cursors_stay_on_their_character_while_others_edit_before_them() {
    let mut sim = sim_with_awareness(5, 2);
    sim.edit(0, DOC, |d| d.transact().text("text").insert(0, "hello world").map(drop).unwrap());
    sim.run_for(Duration::from_secs(1));
    // Client 0 puts its cursor on the 'w'.
    set_state(&mut sim, 0, "alice", 6);
    sim.run_for(Duration::from_secs(1));
    // Client 1 types before it, and deletes before it, several times.
    for (i, insert) in ["Oh, ", "well: ", "X"].iter().enumerate() {
        sim.edit(1, DOC, |d| d.transact().text("text").insert(0, insert).map(drop).unwrap());
        sim.run_for(Duration::from_millis(100));
        if i == 1 {
            sim.edit(1, DOC, |d| d.transact().text("text").delete(0, 2).map(drop).unwrap());
        }
        sim.run_for(Duration::from_millis(100));
        for client in 0..2 {
            let session = sim.client(client);
            let text = session.document(DOC).unwrap().text("text");
            let cursor = match client {
                0 => &session.plugin::<Aw>().unwrap().local_state(DOC).unwrap().cursor,
                _ => &session.plugin::<Aw>().unwrap().state_of(DOC, PeerId::new(1)).unwrap().cursor,
            };
            let pos = text.resolve_cursor(cursor).expect("the character is still there");
            let under = text.to_string().chars().nth(pos);
            assert_eq!(under, Some('w'), "client {client}, text {:?}, position {pos}", text.to_string());
        }
    }
}

/// Through broken links, partitions and server restarts (the server's awareness is in
/// memory and lost with it), every client ends up seeing every other client's last state.
#[test]
fn states_converge_through_faults() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000) / 5;
    for seed in 0..seeds {
        let clients = 2 + (seed % 3) as usize;
        let mut sim = Sim::new(seed, clients, &[DOC], Faults::heavy());
        sim.set_server_setup(|server| {
            server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
        });
        for i in 0..clients {
            sim.client_mut(i).add_plugin(Aw::new(AwarenessConfig::default()));
        }
        for step in 0..60 {
            let client = sim.rng.below(clients as u64) as usize;
            set_state(&mut sim, client, &format!("user{client} step{step}"), 0);
            let pause = 5 + sim.rng.below(200);
            sim.run_for(Duration::from_millis(pause));
        }
        sim.heal();
        assert!(sim.run_until_settled(&[DOC], Duration::from_secs(120)), "seed {seed}: never settled");
        sim.run_for(Duration::from_secs(1));
        for i in 0..clients {
            let expected: BTreeMap<PeerId, String> = (0..clients)
                .filter(|&j| j != i)
                .filter_map(|j| {
                    let aw = sim.client(j).plugin::<Aw>().unwrap();
                    aw.local_state(DOC).map(|p| (PeerId::new(1 + j as u64), p.name.clone()))
                })
                .collect();
            assert_eq!(names_seen_by(&sim, i), expected, "seed {seed}, client {i}");
        }
    }
}

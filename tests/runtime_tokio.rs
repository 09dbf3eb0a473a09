//! The tokio runtime over real loopback sockets: clients converge, ride out a lost server
//! with their offline edits, and a graceful shutdown keeps everything it acknowledged.
#![cfg(feature = "tokio")]

use std::time::Duration;

use crdt_sync::tokio::{TokioClient, TokioServer};
use crdt_sync::{ClientConfig, ClientSession, ConnectionStatus, Document, PeerId, Server, ServerConfig};

const DOC: &str = "shared";
/// Generous: CI machines are slow and shared; a passing run takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn client(url: &str, peer: u64) -> TokioClient {
    let config = ClientConfig::default().with_rng_seed(peer).with_reconnect(
        Duration::from_millis(20),
        Duration::from_millis(200),
        None,
    );
    TokioClient::connect(url, ClientSession::new(PeerId::new(peer), config))
}

async fn text(client: &TokioClient) -> String {
    client.read(DOC, |doc| doc.text("text").to_string()).await.unwrap_or_default()
}

/// Wait until every client holds `expected` (or fail after [`PATIENCE`]).
async fn converge(clients: &[&TokioClient], expected: &str) {
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut all = true;
            for client in clients {
                all &= text(client).await == expected;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if waited.is_err() {
        let mut texts = Vec::new();
        for client in clients {
            texts.push(text(client).await);
        }
        panic!("no convergence on {expected:?}: {texts:?}");
    }
}

async fn type_text(client: &TokioClient, at: usize, s: &str) {
    let s = s.to_owned();
    client.edit(DOC, move |doc| doc.transact().text("text").insert(at, &s).map(drop).unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_converge_on_one_document() {
    let server = TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let clients: Vec<TokioClient> = (1..=3).map(|peer| client(&url, peer)).collect();
    for (i, c) in clients.iter().enumerate() {
        c.subscribe(DOC, Document::new(PeerId::new(i as u64 + 1))).await;
    }
    for c in &clients {
        tokio::time::timeout(PATIENCE, c.wait_status(ConnectionStatus::Connected)).await.unwrap();
    }
    // Everyone types at the start at once; the merge is the same everywhere.
    for round in 0..20 {
        for (i, c) in clients.iter().enumerate() {
            type_text(c, 0, &format!("{i}:{round} ")).await;
        }
    }
    for c in &clients {
        tokio::time::timeout(PATIENCE, c.wait_saved(DOC)).await.unwrap();
    }
    let expected = text(&clients[0]).await;
    // "i:r " for rounds 0-9, "i:rr " for 10-19.
    assert_eq!(expected.len(), 3 * (10 * 4 + 10 * 5), "every keystroke is there: {expected:?}");
    let refs: Vec<&TokioClient> = clients.iter().collect();
    converge(&refs, &expected).await;
    let server_text = server.with(|s| s.document(DOC).unwrap().text("text").to_string()).await.unwrap();
    assert_eq!(server_text, expected);
    for c in clients {
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_loses_the_server_pushes_its_offline_edits_when_it_returns() {
    let server = TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
    let addr = server.local_addr();
    let url = format!("ws://{addr}");
    let (a, b) = (client(&url, 1), client(&url, 2));
    a.subscribe(DOC, Document::new(PeerId::new(1))).await;
    b.subscribe(DOC, Document::new(PeerId::new(2))).await;
    type_text(&a, 0, "online. ").await;
    tokio::time::timeout(PATIENCE, a.wait_saved(DOC)).await.unwrap();
    converge(&[&a, &b], "online. ").await;

    // The server goes away; both clients keep editing offline.
    let store = server.shutdown().await.into_store();
    tokio::time::timeout(PATIENCE, a.wait_status(ConnectionStatus::Reconnecting)).await.unwrap();
    type_text(&a, 8, "offline a. ").await;
    type_text(&b, 0, "offline b. ").await;
    assert!(!a.with(|s| s.is_saved(DOC)).await.unwrap(), "nothing can be saved without a server");

    // It comes back on the same address with the same documents: both push what they made.
    let server = TokioServer::serve(addr, Server::new(ServerConfig::default(), store)).await.unwrap();
    tokio::time::timeout(PATIENCE, a.wait_saved(DOC)).await.unwrap();
    tokio::time::timeout(PATIENCE, b.wait_saved(DOC)).await.unwrap();
    let expected = "offline b. online. offline a. ";
    converge(&[&a, &b], expected).await;
    let server_text = server.with(|s| s.document(DOC).unwrap().text("text").to_string()).await.unwrap();
    assert_eq!(server_text, expected);
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_keeps_everything_it_acknowledged() {
    let server = TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let writers: Vec<TokioClient> = (1..=3).map(|peer| client(&url, peer)).collect();
    for (i, w) in writers.iter().enumerate() {
        w.subscribe(DOC, Document::new(PeerId::new(i as u64 + 1))).await;
    }
    // Each writer first types 10 keystrokes and sees them saved, so that every writer has
    // something acknowledged; then it types 190 more as fast as it can, noting how many the
    // server has acknowledged (all of them whenever "saved" comes back). The server stops
    // while they type.
    for (i, w) in writers.iter().enumerate() {
        let letter = ((b'a' + i as u8) as char).to_string();
        for _ in 0..10 {
            type_text(w, 0, &letter).await;
        }
        tokio::time::timeout(PATIENCE, w.wait_saved(DOC)).await.unwrap();
    }
    let mut typing = Vec::new();
    for (i, w) in writers.into_iter().enumerate() {
        typing.push(tokio::spawn(async move {
            let letter = ((b'a' + i as u8) as char).to_string();
            let mut acknowledged = 10;
            for k in 10..200 {
                type_text(&w, 0, &letter).await;
                if k % 20 == 19
                    && tokio::time::timeout(Duration::from_millis(200), w.wait_saved(DOC)).await.is_ok()
                {
                    acknowledged = k + 1;
                }
            }
            (w, acknowledged)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = server.shutdown().await;
    let stored = server.document(DOC).map(|d| d.text("text").to_string()).unwrap_or_default();
    for (i, t) in typing.into_iter().enumerate() {
        let (w, acknowledged) = t.await.unwrap();
        let letter = (b'a' + i as u8) as char;
        let stored_count = stored.chars().filter(|c| *c == letter).count();
        assert!(
            stored_count >= acknowledged,
            "writer {i}: {acknowledged} keystrokes acknowledged, {stored_count} stored"
        );
        let session = w.close().await;
        assert!(session.document(DOC).unwrap().text("text").len() >= 200, "offline edits are kept");
    }
}

//! Two clients typing into one text at the same time, through a server.
//!
//! ```text
//! cargo run --release --features cli --bin crdt-sync -- serve     # in one terminal
//! cargo run --example client --features tokio                     # in another
//! cargo run --example client --features tokio -- ws://127.0.0.1:8787 my-doc
//! ```
//!
//! Alice and Bob type at the same time, one character every few milliseconds, into the same
//! text: Alice at its start, Bob at its end. Both end with the same text, which
//! `crdt-sync cat URL DOC --container text` prints too.

use std::time::Duration;

use crdt_sync::tokio::TokioClient;
use crdt_sync::{ClientConfig, ClientSession, Document, PeerId};

/// Type `line` one character at a time: at the start of the text if `first`, else at its end.
async fn type_line(client: &TokioClient, doc: &str, line: &str, first: bool) {
    for (i, c) in line.chars().enumerate() {
        client
            .edit(doc, move |d| {
                let at = if first { i } else { d.text("text").len() };
                d.transact().text("text").insert(at, &c.to_string()).map(drop)
            })
            .await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:8787".to_owned());
    let doc = std::env::args().nth(2).unwrap_or_else(|| "example".to_owned());
    // Replica ids must be unique per writer: derived from the process, so that running the
    // example twice adds two more writers rather than reusing the first ones.
    let base = u64::from(std::process::id()) << 8;
    let clients: Vec<TokioClient> = ["alice", "bob"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let peer = PeerId::new(base + i as u64 + 1);
            let config = ClientConfig::default().with_client_name(*name);
            TokioClient::connect(url.clone(), ClientSession::new(peer, config))
        })
        .collect();
    for (i, client) in clients.iter().enumerate() {
        client.subscribe(doc.clone(), Document::new(PeerId::new(base + i as u64 + 1))).await;
    }
    let typing = async {
        tokio::join!(
            type_line(&clients[0], &doc, "Alice was here. ", true),
            type_line(&clients[1], &doc, "Bob too. ", false),
        );
        for client in &clients {
            client.wait_saved(&doc).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), typing).await.is_err() {
        eprintln!(
            "no server at {url}? Start one with: cargo run --release --features cli --bin crdt-sync -- serve"
        );
        std::process::exit(1);
    }
    // Both are saved; give the last fan-out a moment to reach the other side.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, client) in ["alice", "bob"].iter().zip(&clients) {
        let text = client.read(&doc, |d| d.text("text").to_string()).await.unwrap_or_default();
        println!("{name:>5} sees: {text}");
    }
    for client in clients {
        client.close().await;
    }
}

//! A sync server in a few lines: WebSocket on tokio, documents in memory, presence on.
//!
//! ```text
//! cargo run --example server --features tokio            # ws://127.0.0.1:8787
//! cargo run --example server --features tokio -- 0.0.0.0:9000
//! ```
//!
//! It prints who connects and what they do; Ctrl-C stops it cleanly. For documents that
//! survive a restart, run the `crdt-sync serve` binary instead.

use crdt_sync::tokio::TokioServer;
use crdt_sync::{AwarenessConfig, AwarenessServer, Server, ServerConfig, ServerEvent};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8787".to_owned());
    let mut server = Server::in_memory(ServerConfig::default());
    server.add_plugin(AwarenessServer::new(AwarenessConfig::default()));
    let server = TokioServer::serve(addr, server).await?;
    println!("listening on ws://{}", server.local_addr());

    let mut events = server.events();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(ServerEvent::Handshake { client_name, peer, .. }) => println!("{client_name} ({peer:?}) connected"),
                Ok(ServerEvent::Subscribed { document, connection }) => println!("connection {} opened {document:?}", connection.0),
                Ok(ServerEvent::ChangesApplied { document, applied, .. }) => println!("{applied} change(s) to {document:?}"),
                Ok(ServerEvent::ConnectionClosed { connection, reason }) => println!("connection {} closed: {reason:?}", connection.0),
                Ok(_) => {}
                Err(_) => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let server = server.shutdown().await;
    println!("stopped with {} document(s)", crdt_sync::DocumentStore::names(server.store()).len());
    Ok(())
}

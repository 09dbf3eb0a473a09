//! The `crdt-sync` binary end to end: serve on a data folder, write through a client, read
//! back with `cat`, stop with SIGTERM, and find everything with `export`.
#![cfg(all(feature = "cli", unix))]

use std::process::{Child, Command};
use std::time::Duration;

use crdt_sync::tokio::TokioClient;
use crdt_sync::{ClientConfig, ClientSession, Document, PeerId};

mod common;

use common::process::{BIN, run, serve_with};

/// Start `crdt-sync serve` on a free port; returns the child and its `ws://` address.
fn serve(data: &std::path::Path) -> (Child, String) {
    serve_on(data, "127.0.0.1:0")
}

fn serve_on(data: &std::path::Path, listen: &str) -> (Child, String) {
    serve_with(data, listen, &[])
}

#[test]
fn serve_cat_terminate_export() {
    let data = std::env::temp_dir().join(format!("crdt-sync-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut server, url) = serve(&data);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client =
            TokioClient::connect(url.clone(), ClientSession::new(PeerId::new(7), ClientConfig::default()));
        client.subscribe("notes", Document::new(PeerId::new(7))).await;
        client
            .edit("notes", |d| d.transact().text("text").insert(0, "héllo, wörld").map(drop).unwrap())
            .await;
        tokio::time::timeout(Duration::from_secs(20), client.wait_saved("notes")).await.expect("saved");
        client.close().await;
    });

    let (ok, text) = run(&["cat", &url, "notes", "--container", "text"]);
    assert!(ok);
    assert_eq!(text, "héllo, wörld");
    let (ok, json) = run(&["cat", &url, "notes"]);
    assert!(ok);
    assert!(json.contains("héllo, wörld"), "{json}");

    // `export` reads the data folder while the server runs.
    let data_arg = data.to_str().unwrap();
    let (ok, text) = run(&["export", "--data", data_arg, "notes", "--container", "text"]);
    assert!(ok);
    assert_eq!(text, "héllo, wörld");

    // SIGTERM: a clean stop.
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success(), "a clean exit");

    let (ok, text) = run(&["export", "--data", data_arg, "notes", "--container", "text"]);
    assert!(ok);
    assert_eq!(text, "héllo, wörld");
    let (ok, _) = run(&["export", "--data", data_arg, "missing"]);
    assert!(!ok, "a missing document is an error");
    // `ls` names every stored document with its size on disk.
    let (ok, listing) = run(&["ls", "--data", data_arg]);
    assert!(ok);
    let rows: Vec<(&str, u64)> = listing
        .lines()
        .map(|line| {
            let (name, bytes) = line.split_once('\t').expect("NAME<TAB>BYTES");
            (name, bytes.parse().expect("a size"))
        })
        .collect();
    assert_eq!(rows.len(), 1, "{listing}");
    assert_eq!(rows[0].0, "notes");
    let database = std::fs::metadata(data.join("documents.sqlite3")).unwrap().len();
    assert!(rows[0].1 > 0 && rows[0].1 < database, "{} bytes of a {database}-byte database", rows[0].1);
    let (ok, _) = run(&["ls", "--data", "/nonexistent/crdt-sync"]);
    assert!(!ok, "a folder that is not a data folder is an error");

    // And a restarted server serves it from the folder.
    let (mut server, url) = serve(&data);
    let (ok, text) = run(&["cat", &url, "notes", "--container", "text"]);
    assert!(ok);
    assert_eq!(text, "héllo, wörld");
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// A client typing through a server killed with SIGKILL and restarted on the same port and
/// folder: it reconnects and pushes what the new server lacks; nothing it typed is lost.
#[test]
fn a_client_rides_out_a_killed_server() {
    let data = std::env::temp_dir().join(format!("crdt-sync-cli-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let (mut server, url) = serve_on(&data, &listen);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let expected: String = (0..600).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    runtime.block_on(async {
        let config = ClientConfig::default().with_reconnect(
            Duration::from_millis(20),
            Duration::from_millis(200),
            None,
        );
        let client = TokioClient::connect(url.clone(), ClientSession::new(PeerId::new(9), config));
        client.subscribe("notes", Document::new(PeerId::new(9))).await;
        for (i, c) in expected.chars().enumerate() {
            client
                .edit("notes", move |d| {
                    d.transact().text("text").insert(i, &c.to_string()).map(drop).unwrap()
                })
                .await;
            if i == 200 {
                server.kill().unwrap();
                server.wait().unwrap();
            }
            if i == 400 {
                server = serve_on(&data, &listen).0;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::timeout(Duration::from_secs(30), client.wait_saved("notes"))
            .await
            .expect("saved after the restart");
        client.close().await;
    });
    let (ok, text) = run(&["cat", &url, "notes", "--container", "text"]);
    assert!(ok);
    assert_eq!(text, expected);
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `serve --tls-cert --tls-key` speaks wss:// only; `cat --ca` reads through it.
#[test]
fn serve_over_tls_and_cat_with_a_private_authority() {
    let data = std::env::temp_dir().join(format!("crdt-sync-cli-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (cert, key, ca) = (fixture("cert.pem"), fixture("key.pem"), fixture("ca.pem"));
    let (mut server, address) = serve_with(&data, "127.0.0.1:0", &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(address.starts_with("wss://"), "{address}");
    let port = address.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{port}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let trust = crdt_sync::ClientTls::with_root_certificates(&ca).unwrap();
        let session = ClientSession::new(PeerId::new(7), ClientConfig::default());
        let client = TokioClient::connect(crdt_sync::ServerUrl::new(&url).with_tls(trust), session);
        client.subscribe("notes", Document::new(PeerId::new(7))).await;
        client.edit("notes", |d| d.transact().text("text").insert(0, "sealed").map(drop).unwrap()).await;
        tokio::time::timeout(Duration::from_secs(20), client.wait_saved("notes")).await.expect("saved");
        client.close().await;
    });
    let (ok, text) = run(&["cat", &url, "notes", "--container", "text", "--ca", &ca]);
    assert!(ok);
    assert_eq!(text, "sealed");
    // Without the private authority, cat trusts the web's and gets nothing.
    let refused = Command::new(BIN).args(["cat", &url, "notes", "--container", "text"]).output().unwrap();
    assert!(!refused.status.success(), "an untrusted certificate is refused");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("certificate"), "it says why: {said}");
    // Half an identity is a usage error.
    let half = Command::new(BIN).args(["serve", "--tls-cert", &cert]).output().unwrap();
    assert!(!half.status.success());
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// `cat` as a child process, with its standard error (where the binary logs failures).
fn cat_with(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("cat").args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn serve_with_a_secret_lets_in_only_what_each_token_opens() {
    let data = std::env::temp_dir().join(format!("crdt-sync-cli-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let secret = data.join("secret");
    std::fs::write(&secret, "cli-test-secret-0123456789\n").unwrap();
    let secret = secret.to_str().unwrap().to_owned();
    let (server, url) = serve_with(&data.join("db"), "127.0.0.1:0", &["--auth-secret-file", &secret]);
    let _server = common::process::KillOnDrop(server);

    let token = |extra: &[&str]| {
        let mut args = vec!["token", "--secret-file", &secret];
        args.extend_from_slice(extra);
        let (ok, token) = run(&args);
        assert!(ok);
        token.trim().to_owned()
    };
    let writer_token = token(&["--doc", "notes", "--subject", "ann"]);
    let reader_token = token(&["--doc", "notes", "--read-only"]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = ClientConfig::default().with_token(writer_token.clone());
        let writer = TokioClient::connect(url.clone(), ClientSession::new(PeerId::new(1), config));
        writer.subscribe("notes", Document::new(PeerId::new(1))).await;
        writer
            .edit("notes", |d| d.transact().text("text").insert(0, "by the writer").map(drop).unwrap())
            .await;
        tokio::time::timeout(Duration::from_secs(20), writer.wait_saved("notes")).await.expect("saved");

        let config = ClientConfig::default().with_token(reader_token.clone());
        let reader = TokioClient::connect(url.clone(), ClientSession::new(PeerId::new(2), config));
        let mut events = reader.events();
        reader.subscribe("notes", Document::new(PeerId::new(2))).await;
        let told = async {
            loop {
                if let Ok(crdt_sync::ClientEvent::PermissionChanged { permission, .. }) = events.recv().await
                {
                    return permission;
                }
            }
        };
        let permission = tokio::time::timeout(Duration::from_secs(20), told).await.expect("told");
        assert_eq!(permission, crdt_sync::Permission::ReadOnly);
        reader
            .edit("notes", |d| d.transact().text("text").insert(0, "by the reader ").map(drop).unwrap())
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.close().await;
        reader.close().await;
    });

    let (ok, text, _) = cat_with(&[&url, "notes", "--container", "text", "--token", &writer_token]);
    assert!(ok);
    assert_eq!(text, "by the writer", "the reader's edit reached no one");
    let (ok, text, _) = cat_with(&[&url, "notes", "--container", "text", "--token", &reader_token]);
    assert!(ok, "a reader reads");
    assert_eq!(text, "by the writer");

    let (ok, _, log) = cat_with(&[&url, "notes"]);
    assert!(!ok);
    assert!(log.contains("refused the token"), "{log}");
    let (ok, _, log) = cat_with(&[&url, "elsewhere", "--token", &writer_token]);
    assert!(!ok);
    assert!(log.contains("does not open this document"), "{log}");
    let forged = writer_token.replace("cst1.", "cst1.00");
    let (ok, _, log) = cat_with(&[&url, "notes", "--token", &forged]);
    assert!(!ok);
    assert!(log.contains("refused the token"), "{log}");

    std::fs::write(data.join("short"), "too short").unwrap();
    let (ok, _) = run(&["token", "--secret-file", data.join("short").to_str().unwrap(), "--doc", "x"]);
    assert!(!ok, "a weak secret is refused");
    let _ = std::fs::remove_dir_all(&data);
}

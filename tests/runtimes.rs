//! The socket runtimes over real loopback sockets, each one the same way: three clients
//! converge, a client rides out a lost server and pushes its offline edits, a graceful
//! shutdown keeps everything it acknowledged, a client started before its server connects
//! once it is up; the runtimes interoperate (a blocking and a
//! tokio client through an async-std server); and every server and client speaks `wss://`.
#![cfg(all(feature = "tokio", feature = "async-std", feature = "tungstenite"))]

#[path = "../examples/support/net.rs"]
mod net;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crdt_sync::{
    ClientConfig, ClientSession, ClientTls, ConnectionStatus, Document, PeerId, Server, ServerConfig,
    ServerTls, ServerUrl,
};
use net::{NetClient, NetServer, Runtime};

const DOC: &str = "shared";
/// Generous: CI machines are slow and shared; a passing run takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn serve(runtime: Runtime) -> NetServer {
    NetServer::serve(runtime, loopback(), Server::in_memory(ServerConfig::default())).unwrap()
}

fn url(server: &NetServer) -> String {
    format!("ws://{}", server.local_addr())
}

/// A client of `runtime` syncing [`DOC`], reconnecting quickly.
fn client(runtime: Runtime, url: impl Into<ServerUrl>, peer: u64) -> NetClient {
    let config = ClientConfig::default().with_rng_seed(peer).with_reconnect(
        Duration::from_millis(20),
        Duration::from_millis(200),
        None,
    );
    let client = NetClient::connect(runtime, url, ClientSession::new(PeerId::new(peer), config)).unwrap();
    client.with(move |session| drop(session.subscribe(DOC, Document::new(PeerId::new(peer)))));
    client
}

fn text(client: &NetClient) -> String {
    client.read(DOC, |doc| doc.text("text").to_string()).unwrap_or_default()
}

fn type_text(client: &NetClient, at: usize, s: &str) {
    let s = s.to_owned();
    client.edit(DOC, move |doc| doc.transact().text("text").insert(at, &s).map(drop).unwrap()).unwrap();
}

fn saved(client: &NetClient) {
    assert!(client.wait_saved(DOC, PATIENCE), "not saved within {PATIENCE:?}");
}

/// Wait until every client holds `expected` (or fail after [`PATIENCE`]).
#[allow(clippy::disallowed_methods)] // real sockets, real time
fn converge(clients: &[&NetClient], expected: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let texts: Vec<String> = clients.iter().map(|c| text(c)).collect();
        if texts.iter().all(|t| t == expected) {
            return;
        }
        assert!(Instant::now() < deadline, "no convergence on {expected:?}: {texts:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn three_clients_converge_on_one_document(runtime: Runtime) {
    let server = serve(runtime);
    let url = url(&server);
    let clients: Vec<NetClient> = (1..=3).map(|peer| client(runtime, &url, peer)).collect();
    for c in &clients {
        assert!(c.wait_status(ConnectionStatus::Connected, PATIENCE));
    }
    // Everyone types at the start at once; the merge is the same everywhere.
    for round in 0..20 {
        for (i, c) in clients.iter().enumerate() {
            type_text(c, 0, &format!("{i}:{round} "));
        }
    }
    clients.iter().for_each(saved);
    let expected = text(&clients[0]);
    // "i:r " for rounds 0-9, "i:rr " for 10-19.
    assert_eq!(expected.len(), 3 * (10 * 4 + 10 * 5), "every keystroke is there: {expected:?}");
    converge(&clients.iter().collect::<Vec<_>>(), &expected);
    assert_eq!(server.text(DOC), expected);
    for c in clients {
        c.close();
    }
    server.shutdown();
}

fn a_client_that_loses_the_server_pushes_its_offline_edits_when_it_returns(runtime: Runtime) {
    let server = serve(runtime);
    let addr = server.local_addr();
    let url = url(&server);
    let (a, b) = (client(runtime, &url, 1), client(runtime, &url, 2));
    type_text(&a, 0, "online. ");
    saved(&a);
    converge(&[&a, &b], "online. ");

    // The server goes away; both clients keep editing offline.
    let store = server.shutdown().into_store();
    assert!(a.wait_status(ConnectionStatus::Reconnecting, PATIENCE));
    type_text(&a, 8, "offline a. ");
    type_text(&b, 0, "offline b. ");
    assert!(!a.with(|s| s.is_saved(DOC)).unwrap(), "nothing can be saved without a server");

    // It comes back on the same address with the same documents: both push what they made.
    let server = NetServer::serve(runtime, addr, Server::new(ServerConfig::default(), store)).unwrap();
    saved(&a);
    saved(&b);
    let expected = "offline b. online. offline a. ";
    converge(&[&a, &b], expected);
    assert_eq!(server.text(DOC), expected);
    a.close();
    b.close();
    server.shutdown();
}

fn a_graceful_shutdown_keeps_everything_it_acknowledged(runtime: Runtime) {
    let server = serve(runtime);
    let url = url(&server);
    let writers: Vec<NetClient> = (1..=3).map(|peer| client(runtime, &url, peer)).collect();
    // Each writer first types 10 keystrokes and sees them saved, so that every writer has
    // something acknowledged; then it types 190 more as fast as it can, noting how many the
    // server has acknowledged (all of them whenever "saved" comes back). The server stops
    // while they type.
    for (i, w) in writers.iter().enumerate() {
        let letter = ((b'a' + i as u8) as char).to_string();
        for _ in 0..10 {
            type_text(w, 0, &letter);
        }
        saved(w);
    }
    let typing: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            std::thread::spawn(move || {
                let letter = ((b'a' + i as u8) as char).to_string();
                let mut acknowledged = 10;
                for k in 10..200 {
                    type_text(&w, 0, &letter);
                    if k % 20 == 19 && w.wait_saved(DOC, Duration::from_millis(200)) {
                        acknowledged = k + 1;
                    }
                }
                (w, acknowledged)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let server = server.shutdown();
    let stored = server.document(DOC).map(|d| d.text("text").to_string()).unwrap_or_default();
    for (i, t) in typing.into_iter().enumerate() {
        let (w, acknowledged) = t.join().unwrap();
        let letter = (b'a' + i as u8) as char;
        let stored_count = stored.chars().filter(|c| *c == letter).count();
        assert!(
            stored_count >= acknowledged,
            "writer {i}: {acknowledged} keystrokes acknowledged, {stored_count} stored"
        );
        let session = w.close();
        assert!(session.document(DOC).unwrap().text("text").len() >= 200, "offline edits are kept");
    }
}

fn a_client_started_before_its_server_connects_once_it_is_up(runtime: Runtime) {
    // A free port, with nothing listening on it yet.
    let addr = std::net::TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    let early = client(runtime, format!("ws://{addr}"), 1);
    type_text(&early, 0, "typed before the server existed");
    assert!(!early.wait_status(ConnectionStatus::Connected, Duration::from_millis(100)));
    let server = NetServer::serve(runtime, addr, Server::in_memory(ServerConfig::default())).unwrap();
    saved(&early);
    assert_eq!(server.text(DOC), "typed before the server existed");
    early.close();
    server.shutdown();
}

macro_rules! on_each_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod tokio {
            $(#[test] fn $scenario() { super::$scenario(super::Runtime::Tokio) })*
        }
        mod async_std {
            $(#[test] fn $scenario() { super::$scenario(super::Runtime::AsyncStd) })*
        }
        mod blocking {
            $(#[test] fn $scenario() { super::$scenario(super::Runtime::Blocking) })*
        }
    };
}

on_each_runtime!(
    three_clients_converge_on_one_document,
    a_client_that_loses_the_server_pushes_its_offline_edits_when_it_returns,
    a_graceful_shutdown_keeps_everything_it_acknowledged,
    a_client_started_before_its_server_connects_once_it_is_up,
);

/// A durable server on SQLite: "saved" means the change is in the database (read by a
/// second connection while the server runs); a server started again on the database serves
/// it; and the plain constructors refuse a durable configuration they could not honour.
#[cfg(feature = "sqlite")]
fn a_durable_server_acknowledges_what_is_on_disk_and_serves_it_after_a_restart(runtime: Runtime) {
    use crdt_sync::DurableStorage;
    use crdt_sync::sqlite::SqliteStorage;

    let dir = std::env::temp_dir().join(format!(
        "crdt-sync-runtime-durable-{}-{}",
        runtime.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("documents.sqlite3");
    let config = ServerConfig::default().with_durable(Duration::from_secs(30));
    let open = {
        let (path, peer, document) = (path.clone(), config.peer, config.document.clone());
        move || SqliteStorage::open(&path, peer, document.clone()).unwrap()
    };

    let refused = NetServer::serve(runtime, loopback(), Server::in_memory(config.clone()));
    assert_eq!(refused.err().map(|e| e.kind()), Some(std::io::ErrorKind::InvalidInput));

    let server =
        NetServer::serve_durable(runtime, loopback(), Server::in_memory(config.clone()), open()).unwrap();
    let writer = client(runtime, url(&server), 1);
    type_text(&writer, 0, "on disk");
    saved(&writer);
    let stored = open().load(DOC).unwrap().map(|d| d.text("text").to_string());
    assert_eq!(stored.as_deref(), Some("on disk"), "acknowledged before it was committed");
    // Applied just before the shutdown: committed and acknowledged on the way out.
    type_text(&writer, 7, ", twice");
    #[allow(clippy::disallowed_methods)] // real sockets, real time
    let deadline = Instant::now() + PATIENCE;
    #[allow(clippy::disallowed_methods)]
    while server.text(DOC) != "on disk, twice" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.shutdown();
    let typed = "on disk, twice".chars().count() as u32;
    assert_eq!(writer.with(|s| s.acknowledged(DOC)).flatten(), Some(typed), "the goodbye carries the ack");
    writer.close();

    let server = NetServer::serve_durable(runtime, loopback(), Server::in_memory(config), open()).unwrap();
    let reader = client(runtime, url(&server), 2);
    converge(&[&reader], "on disk, twice");
    reader.close();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "sqlite")]
mod durable {
    #[test]
    fn tokio() {
        super::a_durable_server_acknowledges_what_is_on_disk_and_serves_it_after_a_restart(
            super::Runtime::Tokio,
        )
    }
    #[test]
    fn async_std() {
        super::a_durable_server_acknowledges_what_is_on_disk_and_serves_it_after_a_restart(
            super::Runtime::AsyncStd,
        )
    }
    #[test]
    fn blocking() {
        super::a_durable_server_acknowledges_what_is_on_disk_and_serves_it_after_a_restart(
            super::Runtime::Blocking,
        )
    }
}

#[test]
fn a_blocking_and_a_tokio_client_edit_one_document_through_an_async_std_server() {
    let server = serve(Runtime::AsyncStd);
    let url = url(&server);
    let blocking = client(Runtime::Blocking, &url, 1);
    let tokio = client(Runtime::Tokio, &url, 2);
    type_text(&blocking, 0, "blocking ");
    saved(&blocking);
    converge(&[&blocking, &tokio], "blocking ");
    type_text(&tokio, 9, "and tokio");
    type_text(&blocking, 0, "[");
    saved(&tokio);
    saved(&blocking);
    converge(&[&blocking, &tokio], "[blocking and tokio");
    assert_eq!(server.text(DOC), "[blocking and tokio");
    blocking.close();
    tokio.close();
    server.shutdown();
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_runtime_serves_and_connects_over_wss() {
    let identity = ServerTls::from_pem_files(fixture("cert.pem"), fixture("key.pem")).unwrap();
    let trust = ClientTls::with_root_certificates(fixture("ca.pem")).unwrap();
    let runtimes = [Runtime::Tokio, Runtime::AsyncStd, Runtime::Blocking];
    for server_runtime in runtimes {
        let server = NetServer::serve_maybe_tls(
            server_runtime,
            loopback(),
            Server::in_memory(ServerConfig::default()),
            Some(identity.clone()),
        )
        .unwrap();
        let url = format!("wss://localhost:{}", server.local_addr().port());
        // One client of each runtime, each typing its name.
        let clients: Vec<NetClient> = runtimes
            .iter()
            .enumerate()
            .map(|(i, &runtime)| client(runtime, ServerUrl::new(&url).with_tls(trust.clone()), i as u64 + 1))
            .collect();
        for (c, runtime) in clients.iter().zip(runtimes) {
            type_text(c, 0, &format!("[{}]", runtime.name()));
            saved(c);
        }
        let expected = server.text(DOC);
        for runtime in runtimes {
            assert!(
                expected.contains(&format!("[{}]", runtime.name())),
                "{server_runtime:?} server: {expected:?}"
            );
        }
        converge(&clients.iter().collect::<Vec<_>>(), &expected);
        // A plain ws:// client gets no WebSocket out of a TLS port.
        let plain = client(Runtime::Blocking, format!("ws://{}", server.local_addr()), 9);
        assert!(!plain.wait_status(ConnectionStatus::Connected, Duration::from_millis(300)));
        plain.close();
        clients.into_iter().for_each(|c| drop(c.close()));
        server.shutdown();
    }
}

#[test]
fn a_client_refuses_a_server_certificate_it_does_not_trust() {
    let identity = ServerTls::from_pem_files(fixture("cert.pem"), fixture("key.pem")).unwrap();
    let server = NetServer::serve_maybe_tls(
        Runtime::Tokio,
        loopback(),
        Server::in_memory(ServerConfig::default()),
        Some(identity),
    )
    .unwrap();
    let url = format!("wss://localhost:{}", server.local_addr().port());
    for runtime in [Runtime::Tokio, Runtime::AsyncStd, Runtime::Blocking] {
        // The web's authorities (the default) never signed the test certificate.
        let c = client(runtime, url.as_str(), 1);
        type_text(&c, 0, "secret");
        // The application learns why it cannot connect (it keeps retrying).
        let why = c.next_transport_failure(PATIENCE).expect("a transport failure event");
        assert!(why.to_lowercase().contains("certificate"), "{runtime:?}: {why}");
        assert!(!c.wait_status(ConnectionStatus::Connected, Duration::from_millis(300)), "{runtime:?}");
        let session = c.close();
        assert_eq!(session.document(DOC).unwrap().text("text").to_string(), "secret", "kept locally");
    }
    assert_eq!(server.text(DOC), "", "nothing reached the server");
    server.shutdown();
}

#[test]
fn tls_identities_that_cannot_load_are_clear_errors() {
    let missing = ServerTls::from_pem_files(fixture("nope.pem"), fixture("key.pem")).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    // A key where the certificate belongs: no certificate in it.
    let swapped = ServerTls::from_pem_files(fixture("key.pem"), fixture("key.pem")).unwrap_err();
    assert!(swapped.to_string().contains("no PEM certificate"), "{swapped}");
    let no_roots = ClientTls::with_root_certificates(fixture("key.pem")).unwrap_err();
    assert!(no_roots.to_string().contains("no PEM certificate"), "{no_roots}");
}

/// The async-io runtime needs no particular executor: here each task runs on a thread of
/// its own under `async_io::block_on`, the way smol's or any other executor would run it.
#[test]
fn the_async_io_runtime_runs_on_any_executor() {
    use crdt_sync::async_io::{AsyncClient, AsyncServer, Task};
    fn spawn(task: Task) {
        std::thread::spawn(move || async_io::block_on(task));
    }
    let run = async {
        let server = AsyncServer::serve_on("127.0.0.1:0", Server::in_memory(ServerConfig::default()), spawn)
            .await
            .unwrap();
        let url = format!("ws://{}", server.local_addr());
        let session = ClientSession::new(PeerId::new(1), ClientConfig::default());
        let client = AsyncClient::connect_on(url, session, spawn);
        client.subscribe(DOC, Document::new(PeerId::new(1))).await;
        client.edit(DOC, |d| d.transact().text("text").insert(0, "anywhere").map(drop).unwrap()).await;
        client.wait_saved(DOC).await;
        let text = server.with(|s| s.document(DOC).unwrap().text("text").to_string()).await;
        assert_eq!(text.as_deref(), Some("anywhere"));
        client.close().await;
        server.shutdown().await;
        true
    };
    let give_up = async {
        async_io::Timer::after(PATIENCE).await;
        false
    };
    assert!(async_io::block_on(futures_lite::future::or(run, give_up)), "stuck for {PATIENCE:?}");
}

/// Frames far larger than TLS's record and buffer sizes and the sockets' buffers cross
/// `ws://` and `wss://` both ways on every runtime: a client types a large text in one edit,
/// another subscribes and receives it whole.
#[test]
fn large_frames_cross_both_ways() {
    let identity = ServerTls::from_pem_files(fixture("cert.pem"), fixture("key.pem")).unwrap();
    let trust = ClientTls::with_root_certificates(fixture("ca.pem")).unwrap();
    // ~600 KB of text, not compressible to nothing: the frames stay hundreds of KB.
    let big: String = (0..60_000u32).map(|i| format!("{:09}\n", i.wrapping_mul(2_654_435_761))).collect();
    let runtimes = [Runtime::Tokio, Runtime::AsyncStd, Runtime::Blocking];
    for (runtime, secure) in runtimes.into_iter().flat_map(|r| [(r, false), (r, true)]) {
        let tls = secure.then(|| identity.clone());
        let server =
            NetServer::serve_maybe_tls(runtime, loopback(), Server::in_memory(ServerConfig::default()), tls)
                .unwrap();
        let scheme = if secure { "wss" } else { "ws" };
        let url = ServerUrl::new(format!("{scheme}://localhost:{}", server.local_addr().port()))
            .with_tls(trust.clone());
        let writer = client(runtime, url.clone(), 1);
        type_text(&writer, 0, &big);
        assert!(
            writer.wait_saved(DOC, PATIENCE),
            "{runtime:?} {scheme}: not saved: {:?}",
            writer.next_transport_failure(Duration::from_secs(2))
        );
        assert_eq!(server.text(DOC).len(), big.len(), "{runtime:?} {scheme}: the server has it all");
        let reader = client(runtime, url, 2);
        converge(&[&reader], &big);
        writer.close();
        reader.close();
        server.shutdown();
    }
}

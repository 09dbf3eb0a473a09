//! The `crdt-sync` binary as a child process: start it on a data folder, read where it
//! listens, run its tools.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_crdt-sync");

/// A fresh, empty folder under the system's temporary folder, unique to this process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crdt-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Start `crdt-sync serve --listen LISTEN --data DATA EXTRA...`; returns the child and the
/// address it logs (`ws://` or `wss://`), once it listens.
pub fn serve_with(data: &Path, listen: &str, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--data"])
        .arg(data)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("it logs where it listens").unwrap();
        if let Some(at) = line.find("wss://").or_else(|| line.find("ws://")) {
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe; `CRDT_SYNC_TEST_LOG=FILE`
    // keeps it.
    let keep = std::env::var_os("CRDT_SYNC_TEST_LOG")
        .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    std::thread::spawn(move || {
        let mut keep = keep;
        for line in lines.map_while(Result::ok) {
            if let Some(file) = keep.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });
    (child, address)
}

/// Run the binary with `args`; whether it succeeded, and its standard output.
pub fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// A free loopback port (free when asked; a server started right after gets it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped, so that a failing test leaves no server behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

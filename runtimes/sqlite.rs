//! Durable documents in SQLite (feature `sqlite`): the store behind `crdt-sync serve`.
//!
//! Each document is a snapshot (its whole encoding) plus a tail of updates appended since,
//! one row per commit of the server. SQLite runs in WAL mode with `synchronous=FULL`, so a
//! commit is on disk when [`SqliteStorage::commit`] returns, and readers (`crdt-sync
//! export`, `crdt-sync ls`) see a consistent state while the server writes.
//!
//! Compaction folds a document's tail into a new snapshot: when the tail outgrows the
//! snapshot, or once the document has been left alone for a while. It runs on its own
//! connection ([`SqliteStorage::compact_due`], in the background with
//! [`SqliteStorage::spawn_compactor`]) and never blocks commits for longer than one short
//! write: it reads and re-encodes the document outside any write transaction, then swaps the
//! snapshot in and drops exactly the tail rows it folded, unless a newer snapshot replaced
//! it meanwhile.
//!
//! ```no_run
//! # fn main() -> Result<(), crdt_sync::StorageError> {
//! use crdt_sync::sqlite::SqliteStorage;
//! use crdt_sync::{DurableStorage, ServerConfig};
//!
//! let config = ServerConfig::default();
//! let mut storage = SqliteStorage::open("data/documents.sqlite3", config.peer, config.document.clone())?;
//! if let Some(doc) = storage.load("notes")? {
//!     println!("{}", doc.text("body"));
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{
    Document, DocumentConfig, DurableStorage, PeerId, StorageError, StorageWrite, StoredData,
    load_stored_entries,
};

/// The schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS documents (
    name TEXT PRIMARY KEY NOT NULL,
    -- The whole document as of the last compaction or replacement; NULL before the first.
    snapshot BLOB,
    -- Bumped whenever the snapshot is replaced by a commit, so that a compaction working
    -- from an older state knows to give up.
    generation INTEGER NOT NULL DEFAULT 0,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    tail_bytes INTEGER NOT NULL DEFAULT 0,
    tail_entries INTEGER NOT NULL DEFAULT 0,
    -- Milliseconds since the Unix epoch of the last commit that touched it.
    updated_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tail (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    document TEXT NOT NULL,
    entry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tail_by_document ON tail (document, seq);
";

const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// When [`SqliteStorage::compact_due`] folds a document's tail into its snapshot.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CompactionPolicy {
    /// Compact once the tail holds more bytes than the snapshot and at least this many.
    pub min_tail_bytes: u64,
    /// Compact once the tail has this many entries, whatever their size (each is a
    /// separate import when the document loads).
    pub max_tail_entries: u64,
    /// Compact a document with any tail once nothing was committed to it for this long.
    pub idle: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy { min_tail_bytes: 64 * 1024, max_tail_entries: 1000, idle: Duration::from_secs(30) }
    }
}

/// A stored document's name and sizes in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredDocument {
    /// The document's name.
    pub name: String,
    /// Bytes of its snapshot.
    pub snapshot_bytes: u64,
    /// Bytes of the updates appended since.
    pub tail_bytes: u64,
    /// How many updates.
    pub tail_entries: u64,
}

impl StoredDocument {
    /// Bytes stored in all.
    pub fn bytes(&self) -> u64 {
        self.snapshot_bytes + self.tail_bytes
    }
}

/// Documents in one SQLite database file.
#[derive(Debug)]
pub struct SqliteStorage {
    connection: Connection,
    path: PathBuf,
    peer: PeerId,
    config: DocumentConfig,
}

impl SqliteStorage {
    /// Open (creating it if needed) the database at `path`. Documents load with replica id
    /// `peer` and `config` (the server's).
    pub fn open(path: impl AsRef<Path>, peer: PeerId, config: DocumentConfig) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let storage = Self::connect(&path, flags, peer, config)?;
        let version: i64 = storage
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| fail(&path, e))?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::new(format!(
                "{}: written by a newer crdt-sync (schema {version}, this one knows {SCHEMA_VERSION})",
                path.display()
            )));
        }
        storage.connection.execute_batch(SCHEMA).map_err(|e| fail(&path, e))?;
        storage.connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| fail(&path, e))?;
        Ok(storage)
    }

    /// Open an existing database at `path`, failing if there is none (for tools that read
    /// while a server may be running).
    pub fn open_existing(
        path: impl AsRef<Path>,
        peer: PeerId,
        config: DocumentConfig,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(StorageError::new(format!("{}: no crdt-sync database", path.display())));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let storage = Self::connect(&path, flags, peer, config)?;
        let version: i64 = storage
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| fail(&path, e))?;
        if version != SCHEMA_VERSION {
            return Err(StorageError::new(format!(
                "{}: not a crdt-sync database (schema {version})",
                path.display()
            )));
        }
        Ok(storage)
    }

    fn connect(
        path: &Path,
        flags: OpenFlags,
        peer: PeerId,
        config: DocumentConfig,
    ) -> Result<Self, StorageError> {
        let connection = Connection::open_with_flags(path, flags).map_err(|e| fail(path, e))?;
        // A compaction's short write or another process's may hold the lock for a moment.
        connection.busy_timeout(Duration::from_secs(10)).map_err(|e| fail(path, e))?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| fail(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::new(format!("{}: cannot use WAL mode (got {mode})", path.display())));
        }
        // FULL: the WAL is synced at every commit, so a commit survives power loss, not
        // only a crash of the process.
        connection.pragma_update(None, "synchronous", "FULL").map_err(|e| fail(path, e))?;
        Ok(SqliteStorage { connection, path: path.to_path_buf(), peer, config })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored document with its sizes, sorted by name.
    pub fn list(&self) -> Result<Vec<StoredDocument>, StorageError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, snapshot_bytes, tail_bytes, tail_entries FROM documents ORDER BY name")
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(StoredDocument {
                    name: row.get(0)?,
                    snapshot_bytes: row.get::<_, i64>(1)?.max(0) as u64,
                    tail_bytes: row.get::<_, i64>(2)?.max(0) as u64,
                    tail_entries: row.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Fold the tail of every document that `policy` says is due into a new snapshot.
    /// Returns how many it compacted. Safe to call on one connection while another commits.
    pub fn compact_due(&mut self, policy: &CompactionPolicy) -> Result<usize, StorageError> {
        let due: Vec<String> = {
            let sql = format!(
                "SELECT name FROM documents WHERE tail_entries > 0 AND (
                    (tail_bytes > snapshot_bytes AND tail_bytes >= ?1) OR tail_entries >= ?2
                    OR updated_ms <= {NOW_MS} - ?3)"
            );
            let mut statement = self.connection.prepare(&sql).map_err(|e| self.fail(e))?;
            let idle_ms = i64::try_from(policy.idle.as_millis()).unwrap_or(i64::MAX);
            let min_bytes = i64::try_from(policy.min_tail_bytes).unwrap_or(i64::MAX);
            let max_entries = i64::try_from(policy.max_tail_entries).unwrap_or(i64::MAX);
            let rows = statement
                .query_map(params![min_bytes, max_entries, idle_ms], |row| row.get(0))
                .map_err(|e| self.fail(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))?
        };
        let mut compacted = 0;
        for name in due {
            compacted += usize::from(self.compact(&name)?);
        }
        Ok(compacted)
    }

    /// Fold the tail of `name` into a new snapshot; false if there was nothing to fold or a
    /// commit replaced the document meanwhile.
    pub fn compact(&mut self, name: &str) -> Result<bool, StorageError> {
        // Read a consistent state without blocking writers (WAL readers never do).
        let (generation, snapshot, entries) = {
            let read = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(fail_at(&self.path))?;
            let Some((generation, snapshot)) = read
                .query_row("SELECT generation, snapshot FROM documents WHERE name = ?1", [name], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
                })
                .optional()
                .map_err(fail_at(&self.path))?
            else {
                return Ok(false);
            };
            let entries = tail_of(&read, name).map_err(fail_at(&self.path))?;
            read.commit().map_err(fail_at(&self.path))?;
            (generation, snapshot, entries)
        };
        let Some(&(last_seq, _)) = entries.last() else { return Ok(false) };
        let doc = load_stored_entries(
            self.peer,
            &self.config,
            snapshot.iter().map(Vec::as_slice).chain(entries.iter().map(|(_, e)| e.as_slice())),
        )
        .map_err(|e| StorageError::new(format!("{}: document {name:?}: {e}", self.path.display())))?;
        let encoded = doc.encode();
        let write = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail_at(&self.path))?;
        let current: Option<i64> = write
            .query_row("SELECT generation FROM documents WHERE name = ?1", [name], |row| row.get(0))
            .optional()
            .map_err(fail_at(&self.path))?;
        if current != Some(generation) {
            return Ok(false); // replaced meanwhile: the rollback on drop keeps the newer state
        }
        write
            .execute("DELETE FROM tail WHERE document = ?1 AND seq <= ?2", params![name, last_seq])
            .map_err(fail_at(&self.path))?;
        write
            .execute(
                "UPDATE documents SET snapshot = ?2, snapshot_bytes = ?3,
                    tail_bytes = (SELECT COALESCE(SUM(length(entry)), 0) FROM tail WHERE document = ?1),
                    tail_entries = (SELECT COUNT(*) FROM tail WHERE document = ?1)
                 WHERE name = ?1",
                params![name, encoded, encoded.len() as i64],
            )
            .map_err(fail_at(&self.path))?;
        write.commit().map_err(fail_at(&self.path))?;
        Ok(true)
    }

    /// Compact in the background: a thread with its own connection checks `policy` every
    /// `every` until the returned handle is dropped.
    pub fn spawn_compactor(
        &self,
        policy: CompactionPolicy,
        every: Duration,
    ) -> Result<Compactor, StorageError> {
        let mut storage = SqliteStorage::open_existing(&self.path, self.peer, self.config.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("crdt-sync compactor".into())
            .spawn(move || {
                let tick = Duration::from_millis(50).min(every);
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    // A failure (a busy disk, say) is retried at the next round; commits
                    // do not depend on compaction.
                    let _ = storage.compact_due(&policy);
                }
            })
            .map_err(|e| StorageError::new(format!("cannot start the compactor: {e}")))?;
        Ok(Compactor { stop, thread: Some(thread) })
    }

    fn fail(&self, error: rusqlite::Error) -> StorageError {
        fail(&self.path, error)
    }
}

impl DurableStorage for SqliteStorage {
    type Document = Document;

    fn load(&mut self, name: &str) -> Result<Option<Document>, StorageError> {
        let read = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(fail_at(&self.path))?;
        let snapshot: Option<Option<Vec<u8>>> = read
            .query_row("SELECT snapshot FROM documents WHERE name = ?1", [name], |row| row.get(0))
            .optional()
            .map_err(fail_at(&self.path))?;
        let Some(snapshot) = snapshot else { return Ok(None) };
        let entries = tail_of(&read, name).map_err(fail_at(&self.path))?;
        read.commit().map_err(fail_at(&self.path))?;
        let entries = snapshot.iter().map(Vec::as_slice).chain(entries.iter().map(|(_, e)| e.as_slice()));
        load_stored_entries(self.peer, &self.config, entries)
            .map(Some)
            .map_err(|e| StorageError::new(format!("{}: document {name:?}: {e}", self.path.display())))
    }

    fn commit(&mut self, writes: &[StorageWrite]) -> Result<(), StorageError> {
        let path = self.path.clone();
        let txn = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail_at(&path))?;
        for write in writes {
            let name: &str = &write.document;
            match &write.data {
                StoredData::Append(update) => {
                    txn.prepare_cached("INSERT INTO tail (document, entry) VALUES (?1, ?2)")
                        .and_then(|mut s| s.execute(params![name, update]))
                        .map_err(fail_at(&path))?;
                    let sql = format!(
                        "INSERT INTO documents (name, tail_bytes, tail_entries, updated_ms) VALUES (?1, ?2, 1, {NOW_MS})
                         ON CONFLICT (name) DO UPDATE SET tail_bytes = tail_bytes + ?2,
                            tail_entries = tail_entries + 1, updated_ms = {NOW_MS}"
                    );
                    txn.prepare_cached(&sql)
                        .and_then(|mut s| s.execute(params![name, update.len() as i64]))
                        .map_err(fail_at(&path))?;
                }
                StoredData::Replace(whole) => {
                    txn.prepare_cached("DELETE FROM tail WHERE document = ?1")
                        .and_then(|mut s| s.execute([name]))
                        .map_err(fail_at(&path))?;
                    let sql = format!(
                        "INSERT INTO documents (name, snapshot, snapshot_bytes, updated_ms) VALUES (?1, ?2, ?3, {NOW_MS})
                         ON CONFLICT (name) DO UPDATE SET snapshot = ?2, snapshot_bytes = ?3,
                            generation = generation + 1, tail_bytes = 0, tail_entries = 0, updated_ms = {NOW_MS}"
                    );
                    txn.prepare_cached(&sql)
                        .and_then(|mut s| s.execute(params![name, whole, whole.len() as i64]))
                        .map_err(fail_at(&path))?;
                }
            }
        }
        txn.commit().map_err(fail_at(&path))
    }
}

/// The background compaction thread; dropping it stops the thread (after at most one
/// round of compaction).
#[derive(Debug)]
pub struct Compactor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tail rows of `name`, oldest first.
fn tail_of(connection: &Connection, name: &str) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
    let mut statement =
        connection.prepare_cached("SELECT seq, entry FROM tail WHERE document = ?1 ORDER BY seq")?;
    let rows = statement.query_map([name], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

fn fail(path: &Path, error: rusqlite::Error) -> StorageError {
    StorageError::new(format!("{}: {error}", path.display()))
}

fn fail_at(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |error| fail(path, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VersionVector;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crdt-sync-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("documents.sqlite3")
    }

    fn open(path: &Path) -> SqliteStorage {
        SqliteStorage::open(path, PeerId::new(0), DocumentConfig::default()).unwrap()
    }

    /// A writer typing `text` in `steps`, with the update of each step.
    fn updates(text: &str, steps: usize) -> Vec<(Vec<u8>, VersionVector)> {
        let mut doc = Document::new(PeerId::new(1));
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for chunk in chars.chunks(chars.len().div_ceil(steps)) {
            let before = doc.version().clone();
            let at = doc.text("t").len();
            doc.transact().text("t").insert(at, &chunk.iter().collect::<String>()).unwrap();
            out.push((doc.export_since(&before).unwrap(), doc.version().clone()));
        }
        out
    }

    fn append(storage: &mut SqliteStorage, name: &str, update: &[u8], version: &VersionVector) {
        let write = StorageWrite::new(name, StoredData::Append(update.to_vec()), version.clone());
        storage.commit(&[write]).unwrap();
    }

    fn text(storage: &mut SqliteStorage, name: &str) -> Option<String> {
        storage.load(name).unwrap().map(|d| d.text("t").to_string())
    }

    #[test]
    fn appended_updates_load_back_after_reopening() {
        let path = scratch("append");
        let mut storage = open(&path);
        assert_eq!(text(&mut storage, "notes"), None, "nothing stored is None, not an error");
        for (update, version) in updates("hello, durable world", 4) {
            append(&mut storage, "notes", &update, &version);
        }
        drop(storage);
        let mut storage = open(&path);
        assert_eq!(text(&mut storage, "notes").as_deref(), Some("hello, durable world"));
        let listed = storage.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].tail_entries, listed[0].snapshot_bytes),
            ("notes", 4, 0)
        );
    }

    #[test]
    fn a_replacement_drops_the_tail_and_later_appends_follow_it() {
        let path = scratch("replace");
        let mut storage = open(&path);
        let steps = updates("abcdef", 3);
        append(&mut storage, "d", &steps[0].0, &steps[0].1);
        // The whole document at step 2 replaces everything; step 3 appends after it.
        let mut whole = Document::new(PeerId::new(9));
        whole.import(&steps[0].0).unwrap();
        whole.import(&steps[1].0).unwrap();
        let write = StorageWrite::new("d", StoredData::Replace(whole.encode()), steps[1].1.clone());
        storage.commit(&[write]).unwrap();
        append(&mut storage, "d", &steps[2].0, &steps[2].1);
        assert_eq!(text(&mut storage, "d").as_deref(), Some("abcdef"));
        let listed = &storage.list().unwrap()[0];
        assert_eq!(listed.tail_entries, 1);
        assert!(listed.snapshot_bytes > 0);
    }

    #[test]
    fn compaction_folds_the_tail_into_the_snapshot_and_keeps_the_document() {
        let path = scratch("compact");
        let mut storage = open(&path);
        for (update, version) in updates("the quick brown fox jumps over the lazy dog", 30) {
            append(&mut storage, "fox", &update, &version);
        }
        append(&mut storage, "quiet", &updates("x", 1)[0].0, &updates("x", 1)[0].1);
        let policy = CompactionPolicy {
            min_tail_bytes: u64::MAX,
            max_tail_entries: 20,
            idle: Duration::from_secs(3600),
        };
        // Only the document past 20 entries is due.
        assert_eq!(storage.compact_due(&policy).unwrap(), 1);
        let listed = storage.list().unwrap();
        let fox = listed.iter().find(|d| d.name == "fox").unwrap();
        assert_eq!((fox.tail_entries, fox.tail_bytes), (0, 0));
        assert!(fox.snapshot_bytes > 0);
        assert_eq!(listed.iter().find(|d| d.name == "quiet").unwrap().tail_entries, 1);
        assert_eq!(text(&mut storage, "fox").as_deref(), Some("the quick brown fox jumps over the lazy dog"));
        // Idle documents compact too; nothing left to fold is not compacted again.
        let idle = CompactionPolicy { idle: Duration::ZERO, ..policy };
        assert_eq!(storage.compact_due(&idle).unwrap(), 1);
        assert_eq!(storage.compact_due(&idle).unwrap(), 0);
        assert_eq!(text(&mut storage, "quiet").as_deref(), Some("x"));
    }

    #[test]
    fn a_damaged_entry_is_an_error_never_an_empty_document() {
        let path = scratch("damaged");
        let mut storage = open(&path);
        let steps = updates("precious", 2);
        append(&mut storage, "d", &steps[0].0, &steps[0].1);
        storage
            .connection
            .execute("INSERT INTO tail (document, entry) VALUES ('d', x'00ff00ff')", [])
            .unwrap();
        let error = storage.load("d").unwrap_err();
        assert!(error.to_string().contains("does not decode"), "{error}");
        // An entry whose dependencies are missing is an error too, not a shorter document.
        let path = scratch("gap");
        let mut storage = open(&path);
        append(&mut storage, "d", &steps[1].0, &steps[1].1);
        let error = storage.load("d").unwrap_err();
        assert!(error.to_string().contains("not stored"), "{error}");
    }

    #[test]
    fn databases_of_a_newer_schema_or_missing_ones_are_refused() {
        let path = scratch("schema");
        let storage = open(&path);
        storage.connection.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(storage);
        let error = SqliteStorage::open(&path, PeerId::new(0), DocumentConfig::default()).unwrap_err();
        assert!(error.to_string().contains("newer"), "{error}");
        let missing = path.with_file_name("missing.sqlite3");
        assert!(SqliteStorage::open_existing(&missing, PeerId::new(0), DocumentConfig::default()).is_err());
        assert!(!missing.exists(), "opening an existing database never creates one");
    }
}

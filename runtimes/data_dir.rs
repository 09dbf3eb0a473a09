//! The server binary's data folder: one file per document holding its whole encoding
//! (snapshot and history), replaced atomically (write a temporary file, sync it, rename it
//! over the old one), so a reader such as `crdt-sync export` never sees half a file.
//!
//! The server writes changed documents every flush interval and at shutdown. A crash loses
//! what changed since the last flush; the SQLite store (issue 7) replaces this folder with
//! one that never acknowledges a change before it is on disk.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crdt_sync::{Document, PeerId};

/// A data folder: `DIR/documents/<hex of the name>.crdt`.
#[derive(Clone, Debug)]
pub struct DataDir {
    documents: PathBuf,
}

const EXTENSION: &str = "crdt";

impl DataDir {
    /// Open `root`, creating it if needed.
    pub fn create(root: &Path) -> io::Result<Self> {
        let documents = root.join("documents");
        fs::create_dir_all(&documents)?;
        Ok(DataDir { documents })
    }

    /// Open `root`, which must exist.
    pub fn existing(root: &Path) -> io::Result<Self> {
        let documents = root.join("documents");
        if !documents.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a crdt-sync data folder", root.display()),
            ));
        }
        Ok(DataDir { documents })
    }

    /// Every stored document. A file that does not decode is an error: starting without it
    /// would let an empty document overwrite it later.
    pub fn load_all(&self, peer: PeerId) -> io::Result<Vec<(String, Document)>> {
        let mut out = Vec::new();
        for (name, path) in self.files()? {
            let bytes = fs::read(&path)?;
            let doc = Document::load(&bytes, peer).map_err(|e| invalid(&path, e))?;
            out.push((name, doc));
        }
        Ok(out)
    }

    /// The stored documents' names and sizes on disk in bytes, sorted by name, without
    /// decoding them.
    pub fn list(&self) -> io::Result<Vec<(String, u64)>> {
        self.files()?.into_iter().map(|(name, path)| Ok((name, fs::metadata(&path)?.len()))).collect()
    }

    /// Each document file with its document's name, sorted by name.
    fn files(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.documents)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue; // temporary files of an interrupted save, say
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).and_then(decode_name) else {
                continue;
            };
            out.push((name, path));
        }
        out.sort();
        Ok(out)
    }

    /// One stored document, if there is one.
    pub fn load(&self, name: &str, peer: PeerId) -> io::Result<Option<Document>> {
        let path = self.path_of(name);
        match fs::read(&path) {
            Ok(bytes) => Document::load(&bytes, peer).map(Some).map_err(|e| invalid(&path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace the stored copy of `name` with `bytes` (a document's encoding), atomically.
    pub fn save(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path_of(name);
        let temporary = path.with_extension("tmp");
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        // The rename is durable once the folder is synced too.
        fs::File::open(&self.documents)?.sync_all()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.documents.join(format!("{}.{EXTENSION}", encode_name(name)))
    }
}

fn invalid(path: &Path, error: crdt_sync::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {error}", path.display()))
}

/// Document names are any string; file names are `d` and the hex of their UTF-8 bytes, so
/// no name can reach outside the folder or collide with another (and the empty name still
/// has a file name).
fn encode_name(name: &str) -> String {
    std::iter::once("d".to_owned()).chain(name.bytes().map(|b| format!("{b:02x}"))).collect()
}

fn decode_name(file: &str) -> Option<String> {
    let hex = file.strip_prefix('d')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_file_names() {
        for name in ["", "notes", "../etc/passwd", "日本語 doc", "a/b\\c"] {
            let file = encode_name(name);
            assert!(file[1..].chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(decode_name(&file).as_deref(), Some(name));
        }
        assert_eq!(decode_name("abc"), None);
        assert_eq!(decode_name("zz"), None);
    }
}

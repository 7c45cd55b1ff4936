//! A versioned in-memory "database" for consistency tests: every row holds a version, bumped by
//! each write; a loader reads the version when its load starts, and the value it returns is that
//! version.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Rows `0..keys`, each with a version starting at 0.
///
/// ```
/// use herder_testkit::Database;
///
/// let db = Database::new(4);
/// assert_eq!(db.read(2), 0);
/// let mut row = db.lock(2);
/// assert_eq!(row.bump(), 1);
/// drop(row);
/// assert_eq!(db.read(2), 1);
/// ```
#[derive(Debug)]
pub struct Database {
    versions: Vec<AtomicU64>,
    writers: Vec<Mutex<()>>,
    reads: AtomicU64,
}

/// A row locked for writing: writes of one key are serialized (bump, then invalidate, then
/// record), so that the recorded order of a key's writes is the order of its versions.
#[derive(Debug)]
pub struct RowGuard<'a> {
    db: &'a Database,
    key: u64,
    _lock: std::sync::MutexGuard<'a, ()>,
}

impl RowGuard<'_> {
    /// Bumps the row's version and returns the new one.
    pub fn bump(&mut self) -> u64 {
        self.db.versions[self.index()].fetch_add(1, SeqCst) + 1
    }

    fn index(&self) -> usize {
        usize::try_from(self.key).expect("a small key")
    }
}

impl Database {
    /// `keys` rows at version 0.
    pub fn new(keys: u64) -> Self {
        Database {
            versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            writers: (0..keys).map(|_| Mutex::new(())).collect(),
            reads: AtomicU64::new(0),
        }
    }

    /// How many rows.
    pub fn keys(&self) -> u64 {
        self.versions.len() as u64
    }

    /// The row's current version (what a load starting now returns).
    ///
    /// # Panics
    ///
    /// If `key` is out of range.
    pub fn read(&self, key: u64) -> u64 {
        self.reads.fetch_add(1, SeqCst);
        self.versions[usize::try_from(key).expect("a small key")].load(SeqCst)
    }

    /// Locks the row for a write.
    ///
    /// # Panics
    ///
    /// If `key` is out of range.
    pub fn lock(&self, key: u64) -> RowGuard<'_> {
        let index = usize::try_from(key).expect("a small key");
        RowGuard {
            db: self,
            key,
            _lock: self.writers[index]
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        }
    }

    /// Row reads so far (backend calls × keys).
    pub fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }
}

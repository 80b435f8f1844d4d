//! The single-host store: all keys in one JSON file, rewritten on every
//! commit through a temp file, fsync and rename, so a netd killed at any
//! point finds either the old or the new state, never half of one.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{Compare, Snapshot, Store, StoreError, Txn, Versioned, WatchEvent};

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    revision: u64,
    entries: BTreeMap<String, Versioned>,
}

pub struct EmbeddedStore {
    path: PathBuf,
    contents: Mutex<Contents>,
    events: broadcast::Sender<WatchEvent>,
}

const FILE: &str = "store.json";

impl EmbeddedStore {
    /// Opens (or starts) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE);
        let contents = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            path,
            contents: Mutex::new(contents),
            events,
        })
    }

    fn persist(&self, contents: &Contents) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(contents).map_err(|e| io(std::io::Error::other(e)))?;
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    fn commit_now(&self, txn: Txn) -> Result<u64, StoreError> {
        let mut guard = self
            .contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for compare in &txn.compares {
            let holds = match compare {
                Compare::Absent(key) => !guard.entries.contains_key(key),
                Compare::Revision(key, rev) => {
                    guard.entries.get(key).map(|v| v.mod_revision) == Some(*rev)
                }
            };
            if !holds {
                let key = match compare {
                    Compare::Absent(k) | Compare::Revision(k, _) => k.clone(),
                };
                return Err(StoreError::Conflict(key));
            }
        }
        let revision = guard.revision + 1;
        let mut next = Contents {
            revision,
            entries: guard.entries.clone(),
        };
        let mut events = Vec::new();
        for key in &txn.deletes {
            if next.entries.remove(key).is_some() {
                events.push(WatchEvent::Delete {
                    key: key.clone(),
                    revision,
                });
            }
        }
        for (key, value) in &txn.puts {
            next.entries.insert(
                key.clone(),
                Versioned {
                    value: value.clone(),
                    mod_revision: revision,
                },
            );
            events.push(WatchEvent::Put {
                key: key.clone(),
                revision,
            });
        }
        // Persist first: memory never runs ahead of the disk.
        self.persist(&next)?;
        *guard = next;
        drop(guard);
        for event in events {
            let _ = self.events.send(event);
        }
        Ok(revision)
    }

    fn read<T>(&self, f: impl FnOnce(&Contents) -> T) -> T {
        let guard = self
            .contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }
}

impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.read(|c| c.entries.get(key).cloned()))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, Versioned>, StoreError> {
        Ok(self.snapshot(prefix).await?.entries)
    }

    async fn snapshot(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        Ok(self.read(|c| Snapshot {
            revision: c.revision,
            entries: c
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }))
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        self.commit_now(txn)
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    /// One host, no one to tell when it goes: the key is written once.
    fn keep_registered(
        &self,
        key: String,
        value: String,
        _ttl_secs: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        if let Err(e) = self.commit_now(Txn::new().put(key, value)) {
            tracing::warn!(error = %crate::logging::chain(&e), "cannot record this host");
        }
        std::future::pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn commits_survive_a_reopen_and_keep_revisions() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let r1 = store
                .commit(Txn::new().put("/a/1", "one").put("/a/2", "two"))
                .await
                .expect("commit");
            let r2 = store
                .commit(Txn::new().delete("/a/1").put("/b", "b"))
                .await
                .expect("commit");
            assert_eq!((r1, r2), (1, 2));
        });
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("reopen");
            let a = store.list("/a/").await.expect("list");
            assert_eq!(a.keys().collect::<Vec<_>>(), vec!["/a/2"]);
            assert_eq!(
                a["/a/2"],
                Versioned {
                    value: "two".into(),
                    mod_revision: 1
                }
            );
            assert_eq!(
                store.get("/b").await.expect("get").map(|v| v.mod_revision),
                Some(2)
            );
        });
    }

    #[test]
    fn a_failed_compare_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .commit(Txn::new().put("/names/n1", "id1"))
                .await
                .expect("commit");
            let e = store
                .commit(
                    Txn::new()
                        .absent("/names/n1")
                        .put("/names/n1", "id2")
                        .put("/other", "x"),
                )
                .await
                .expect_err("conflict");
            assert!(
                matches!(e, StoreError::Conflict(ref k) if k == "/names/n1"),
                "{e}"
            );
            assert_eq!(
                store.get("/names/n1").await.expect("get").map(|v| v.value),
                Some("id1".into())
            );
            assert_eq!(store.get("/other").await.expect("get"), None);
        });
    }

    #[test]
    fn watchers_see_puts_and_deletes() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let mut events = store.watch();
            store.commit(Txn::new().put("/k", "v")).await.expect("put");
            store.commit(Txn::new().delete("/k")).await.expect("delete");
            assert_eq!(
                events.recv().await.ok(),
                Some(WatchEvent::Put {
                    key: "/k".into(),
                    revision: 1
                })
            );
            assert_eq!(
                events.recv().await.ok(),
                Some(WatchEvent::Delete {
                    key: "/k".into(),
                    revision: 2
                })
            );
        });
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        fs::write(dir.path().join(FILE), b"{ not json").expect("write");
        let e = EmbeddedStore::open(dir.path()).err().expect("corrupt");
        assert!(e.to_string().contains("is corrupt"), "{e}");
        assert_eq!(
            fs::read(dir.path().join(FILE)).expect("read"),
            b"{ not json"
        );
    }

    #[test]
    fn a_leftover_temp_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .commit(Txn::new().put("/k", "old"))
                .await
                .expect("commit");
        });
        // A crash between writing the temp file and the rename.
        fs::write(dir.path().join("store.json.tmp"), b"{ half").expect("write");
        block(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            assert_eq!(
                store.get("/k").await.expect("get").map(|v| v.value),
                Some("old".into())
            );
        });
    }
}

//! The cluster store: etcd v3 (a real etcd server, through etcd-client).
//! Compares map to etcd transaction compares, so two hosts can never both
//! take a name, an address or a VNI. The watch resumes from the last
//! revision it saw after a lost connection; when that history is gone
//! (compacted), it tells watchers to do a full resync.

use std::{collections::BTreeMap, time::Duration};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, EventType, GetOptions, Txn as EtcdTxn, TxnOp,
    WatchOptions,
};
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::{Compare, Snapshot, Store, StoreError, Txn, Versioned, WatchEvent};

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    events: broadcast::Sender<WatchEvent>,
}

/// Keys per page of a snapshot: about 300 KiB of netd's records.
const SNAPSHOT_PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (never a netd prefix): to the end of the keyspace.
    vec![0]
}

fn err(endpoints: &str) -> impl Fn(etcd_client::Error) -> StoreError + '_ {
    move |e| StoreError::Etcd {
        endpoints: endpoints.to_string(),
        reason: e.to_string(),
    }
}

/// The key watchers get when they must re-read everything.
pub const RESYNC_KEY: &str = "/netd/";

impl EtcdStore {
    /// Connects to `endpoints` (host:port) and starts watching `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let joined = endpoints.join(",");
        let client =
            tokio::time::timeout(Duration::from_secs(10), Client::connect(endpoints, None))
                .await
                .map_err(|_| StoreError::Etcd {
                    endpoints: joined.clone(),
                    reason: "no answer in 10 s".into(),
                })?
                .map_err(err(&joined))?;
        let (events, _) = broadcast::channel(4096);
        let store = Self {
            client,
            endpoints: joined,
            events,
        };
        // Prove the server answers before anyone relies on it, and learn the
        // revision the watch starts after: the watch task registers with
        // etcd some time after this returns, and a write in between must
        // not be lost.
        let revision = store.snapshot("/netd/\u{7f}").await?.revision as i64;
        tokio::spawn(store.clone().follow(prefix.to_string(), revision + 1));
        Ok(store)
    }

    /// Forwards etcd's watch events, resuming after failures.
    async fn follow(self, prefix: String, mut next_revision: i64) {
        let mut resumed = false;
        loop {
            let mut client = self.client.clone();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next_revision);
            match client.watch(prefix.as_str(), Some(options)).await {
                Ok(mut stream) => {
                    if resumed {
                        info!(revision = next_revision, "etcd watch resumed");
                    }
                    resumed = true;
                    loop {
                        match stream.message().await {
                            Ok(Some(resp)) => {
                                if resp.compact_revision() > 0 {
                                    // History we missed is gone: everyone re-reads.
                                    next_revision = resp.compact_revision();
                                    let _ = self.events.send(WatchEvent::Put {
                                        key: RESYNC_KEY.into(),
                                        revision: 0,
                                    });
                                    break;
                                }
                                for event in resp.events() {
                                    let Some(kv) = event.kv() else { continue };
                                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                                    let revision = kv.mod_revision() as u64;
                                    next_revision = next_revision.max(kv.mod_revision() + 1);
                                    let e = match event.event_type() {
                                        EventType::Put => WatchEvent::Put { key, revision },
                                        EventType::Delete => WatchEvent::Delete { key, revision },
                                    };
                                    let _ = self.events.send(e);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "etcd watch lost");
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "etcd watch cannot start; retrying"),
            }
            // Whatever happened while the watch was down is re-read by everyone.
            let _ = self.events.send(WatchEvent::Put {
                key: RESYNC_KEY.into(),
                revision: 0,
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let mut client = self.client.clone();
        let resp = client.get(key, None).await.map_err(err(&self.endpoints))?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision() as u64,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, Versioned>, StoreError> {
        Ok(self.snapshot(prefix).await?.entries)
    }

    /// Read in pages of [`SNAPSHOT_PAGE`] keys, every page at the first
    /// one's revision: one response for the whole prefix passed gRPC's 4 MiB
    /// message limit at about 17,000 endpoints.
    async fn snapshot(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let mut client = self.client.clone();
        let end = prefix_end(prefix);
        let mut entries = BTreeMap::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SNAPSHOT_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let resp = client
                .get(from.clone(), Some(options))
                .await
                .map_err(err(&self.endpoints))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                entries.insert(
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Versioned {
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        mod_revision: kv.mod_revision() as u64,
                    },
                );
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Snapshot {
            revision: revision as u64,
            entries,
        })
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => {
                    EtcdCompare::create_revision(key.as_str(), CompareOp::Equal, 0)
                }
                Compare::Revision(key, rev) => {
                    EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *rev as i64)
                }
            })
            .collect();
        let mut ops: Vec<TxnOp> = txn
            .deletes
            .iter()
            .map(|k| TxnOp::delete(k.as_str(), None))
            .collect();
        ops.extend(
            txn.puts
                .iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)),
        );
        let mut client = self.client.clone();
        let resp = client
            .txn(EtcdTxn::new().when(compares).and_then(ops))
            .await
            .map_err(err(&self.endpoints))?;
        if !resp.succeeded() {
            // etcd does not say which compare failed: name them all.
            let keys: Vec<&str> = txn
                .compares
                .iter()
                .map(|c| match c {
                    Compare::Absent(k) | Compare::Revision(k, _) => k.as_str(),
                })
                .collect();
            return Err(StoreError::Conflict(keys.join(" or ")));
        }
        Ok(resp.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    fn keep_registered(
        &self,
        key: String,
        value: String,
        ttl_secs: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let client = self.client.clone();
        async move {
            let ttl = ttl_secs.max(2) as i64;
            loop {
                if let Err(e) = hold_lease(client.clone(), &key, &value, ttl).await {
                    warn!(key = %key, error = %e, "host registration lost; registering again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Grants a lease, puts the key under it and keeps the lease alive until
/// something fails.
async fn hold_lease(
    mut client: Client,
    key: &str,
    value: &str,
    ttl: i64,
) -> Result<(), etcd_client::Error> {
    let lease = client.lease_grant(ttl, None).await?.id();
    client
        .put(
            key,
            value,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await?;
    info!(key, ttl, "registered in etcd");
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    loop {
        tokio::time::sleep(Duration::from_millis((ttl as u64 * 1000) / 3)).await;
        keeper.keep_alive().await?;
        match responses.message().await? {
            Some(resp) if resp.ttl() > 0 => {}
            _ => {
                return Err(etcd_client::Error::LeaseKeepAliveError(
                    "the lease expired".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(super::prefix_end("/netd/"), b"/netd0".to_vec());
        assert_eq!(super::prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}

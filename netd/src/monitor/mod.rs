//! `netd monitor`'s source: one task reads the datapath's ring buffer and
//! hands each event, decoded and named, to every listener. The datapath
//! emits only while someone listens: the first listener turns emission on,
//! the last one off.

pub mod pcap;
pub mod record;

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use netd_common::events::{EventKind, MonitorConfig, DEFAULT_BURST, DEFAULT_RATE};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{broadcast, watch},
};

use crate::dataplane::events::Events;
pub use record::{Filter, Record};

/// Events a slow listener may fall behind by before it misses some (and
/// is told how many).
const BACKLOG: usize = 4096;

/// Who an interface is: its endpoint and network, by host veth name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    pub by_host_ifname: BTreeMap<String, (String, String)>,
}

pub struct Hub {
    events: Mutex<Events>,
    tx: broadcast::Sender<Arc<Record>>,
    listeners: AtomicUsize,
    directory: watch::Receiver<Arc<Directory>>,
}

/// A listener's hold on the stream: emission stays on while one exists.
pub struct Listening {
    hub: Arc<Hub>,
    pub rx: broadcast::Receiver<Arc<Record>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if self.hub.listeners.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.hub.switch(MonitorConfig::default());
        }
    }
}

impl Hub {
    pub fn new(events: Events, directory: watch::Receiver<Arc<Directory>>) -> Self {
        Self {
            events: Mutex::new(events),
            tx: broadcast::Sender::new(BACKLOG),
            listeners: AtomicUsize::new(0),
            directory,
        }
    }

    /// A new listener (the first turns emission on).
    pub fn listen(self: &Arc<Self>) -> Listening {
        let rx = self.tx.subscribe();
        if self.listeners.fetch_add(1, Ordering::SeqCst) == 0 {
            self.switch(MonitorConfig {
                kinds: EventKind::ALL.iter().fold(0, |k, e| k | e.bit()),
                rate: DEFAULT_RATE,
                burst: DEFAULT_BURST,
                _pad: 0,
            });
        }
        Listening {
            hub: self.clone(),
            rx,
        }
    }

    fn switch(&self, config: MonitorConfig) {
        let Ok(mut events) = self.events.lock() else {
            return;
        };
        if let Err(e) = events.set(config) {
            tracing::warn!(error = %crate::logging::chain(&e), "cannot switch the datapath's events");
        }
    }

    /// Emitted, suppressed by the budget, and lost to a full ring, since
    /// the maps were made.
    pub fn tallies(&self) -> Option<netd_common::events::EmitBudget> {
        self.events.lock().ok()?.tallies().ok()
    }

    /// Reads the ring for as long as netd runs.
    pub async fn read_ring(self: Arc<Self>) {
        let fd = {
            let Ok(events) = self.events.lock() else {
                return;
            };
            match events.ring().as_fd().try_clone_to_owned() {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the events ring; netd monitor shows nothing");
                    return;
                }
            }
        };
        // SAFETY: `fd` is an owned duplicate of the ring's descriptor; the
        // AsyncFd owns it, unchanged, for as long as it is registered.
        let ready = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the events ring; netd monitor shows nothing");
                return;
            }
        };
        let clock = record::Clock::now();
        loop {
            let Ok(mut guard) = ready.readable().await else {
                return;
            };
            let directory = self.directory.borrow().clone();
            loop {
                let next = match self.events.lock() {
                    Ok(mut events) => events.next_event(),
                    Err(_) => return,
                };
                let Some(event) = next else {
                    break;
                };
                // Nobody listening: the datapath stops soon; drop the rest.
                if self.tx.receiver_count() > 0 {
                    let _ = self
                        .tx
                        .send(Arc::new(Record::of(&event, &directory, &clock)));
                }
            }
            guard.clear_ready();
        }
    }
}

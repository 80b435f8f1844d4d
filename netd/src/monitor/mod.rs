//! `netd monitor`'s source: one task reads the datapath's ring buffer and
//! hands each event, decoded and named, to every listener. The datapath
//! emits only while someone listens: the first listener turns emission on,
//! the last one off.

pub mod pcap;
pub mod record;

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    sync::{Arc, Mutex},
};

use netd_common::events::{EventKind, MonitorConfig, DEFAULT_BURST, DEFAULT_RATE};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{broadcast, watch},
};

use crate::dataplane::events::Events;
pub use record::{Filter, Record};

/// The kinds some listener wants.
fn wanted(wanting: &[usize]) -> u32 {
    wanting
        .iter()
        .zip(EventKind::ALL)
        .filter(|(count, _)| **count > 0)
        .fold(0, |bits, (_, kind)| bits | kind.bit())
}

/// Events a slow listener may fall behind by before it misses some (and
/// is told how many).
const BACKLOG: usize = 4096;

/// The names events are shown with, from the model the last reconcile
/// pass applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// Endpoint and network, by host veth ifindex.
    pub by_ifindex: BTreeMap<u32, (String, String)>,
    /// Service names by index (a conntrack entry's `table`).
    pub services: BTreeMap<u32, String>,
    /// Policies by store index: name, and how many rules each way.
    pub policies: BTreeMap<u32, (String, crate::model::RuleCounts)>,
}

impl Directory {
    pub fn service_name(&self, index: u32) -> String {
        self.services
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("service-{index}"))
    }

    /// A rule id as `netd policy ls` numbers it.
    pub fn rule_name(&self, id: u32) -> String {
        if id == netd_common::policy::RULE_DEFAULT_DENY {
            return "default deny".into();
        }
        let (index, position) = netd_common::policy::rule_of(id);
        self.policies
            .get(&index)
            .and_then(|(name, counts)| {
                let (direction, number) = counts.label(position)?;
                Some(format!("{name} {direction} rule {number}"))
            })
            .unwrap_or_else(|| format!("rule {id:#x}"))
    }
}

pub struct Hub {
    events: Mutex<Events>,
    tx: broadcast::Sender<Arc<Record>>,
    /// How many listeners want each kind (by `EventKind::ALL`'s order).
    wanting: Mutex<[usize; EventKind::ALL.len()]>,
    directory: watch::Receiver<Arc<Directory>>,
}

/// A listener's hold on the stream: the kinds it wants are emitted while
/// it exists.
pub struct Listening {
    hub: Arc<Hub>,
    kinds: u32,
    pub rx: broadcast::Receiver<Arc<Record>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.hub.count_listener(self.kinds, false);
    }
}

impl Hub {
    pub fn new(events: Events, directory: watch::Receiver<Arc<Directory>>) -> Self {
        Self {
            events: Mutex::new(events),
            tx: broadcast::Sender::new(BACKLOG),
            wanting: Mutex::new([0; EventKind::ALL.len()]),
            directory,
        }
    }

    /// A new listener for the event kinds in `kinds` (`EventKind::bit`s):
    /// the datapath emits each kind while some listener wants it.
    pub fn listen(self: &Arc<Self>, kinds: u32) -> Listening {
        let rx = self.tx.subscribe();
        self.count_listener(kinds, true);
        Listening {
            hub: self.clone(),
            kinds,
            rx,
        }
    }

    fn count_listener(&self, kinds: u32, joins: bool) {
        let Ok(mut wanting) = self.wanting.lock() else {
            return;
        };
        let before = wanted(&wanting[..]);
        for (count, kind) in wanting.iter_mut().zip(EventKind::ALL) {
            if kinds & kind.bit() != 0 {
                *count = if joins {
                    *count + 1
                } else {
                    count.saturating_sub(1)
                };
            }
        }
        let now = wanted(&wanting[..]);
        if now != before {
            self.switch(MonitorConfig {
                kinds: now,
                rate: DEFAULT_RATE,
                burst: DEFAULT_BURST,
                _pad: 0,
            });
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

//! Where the manager link takes its events from.
//!
//! The link is written against [`EventFeed`] only. The durable on-flash queue (with its
//! delivery cursor) implements it; until that lands, [`MemoryFeed`] adapts the memory-only
//! [`Events`] so the daemon works end to end. The adapter is deliberately small and lives
//! apart from the trait so it can be deleted in one piece.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::events::{Events, Record};

pub trait EventFeed {
    /// Up to `max` undelivered records from the delivery cursor, oldest first.
    fn pending(&self, max: usize) -> Vec<Record>;
    /// The manager write of everything up to and including `seq` succeeded.
    fn ack(&self, seq: u64);
    /// Signalled whenever a new event is raised (wake the sender).
    fn notify(&self) -> Rc<Notify>;
    /// Events raised and not yet acknowledged (for health's queue depth).
    fn depth(&self) -> u64;
}

// ---- temporary adapter over the memory-only `Events` -------------------------------------

/// A delivery cursor over [`Events::snapshot`], by sequence number. Memory only: what was
/// not delivered is lost with the process, which is why health reports `degraded` with it.
pub struct MemoryFeed {
    events: Events,
    /// Highest acknowledged sequence number.
    acked: Cell<u64>,
    notify: Rc<Notify>,
}

/// `Events` has no raise hook, so the adapter looks for new records on a short tick. The
/// durable queue signals on raise instead. (Each look clones the snapshot: fine for a
/// stopgap, one more reason to replace it.)
const POLL: Duration = Duration::from_millis(250);

impl MemoryFeed {
    /// The feed, plus the task that signals `notify` when new records appear (spawn it on
    /// the `LocalSet`).
    pub fn new(events: Events) -> (Rc<MemoryFeed>, impl std::future::Future<Output = ()>) {
        let feed = Rc::new(MemoryFeed {
            events,
            acked: Cell::new(0),
            notify: Rc::new(Notify::new()),
        });
        let watch = {
            let feed = feed.clone();
            async move {
                let mut seen = 0;
                loop {
                    tokio::time::sleep(POLL).await;
                    let newest = feed.events.snapshot().last().map_or(0, |r| r.seq);
                    if newest > seen {
                        seen = newest;
                        feed.notify.notify_one();
                    }
                }
            }
        };
        (feed, watch)
    }
}

impl EventFeed for MemoryFeed {
    fn pending(&self, max: usize) -> Vec<Record> {
        let acked = self.acked.get();
        self.events
            .snapshot()
            .into_iter()
            .filter(|r| r.seq > acked)
            .take(max)
            .collect()
    }

    fn ack(&self, seq: u64) {
        self.acked.set(self.acked.get().max(seq));
    }

    fn notify(&self) -> Rc<Notify> {
        self.notify.clone()
    }

    fn depth(&self) -> u64 {
        let acked = self.acked.get();
        self.events
            .snapshot()
            .iter()
            .filter(|r| r.seq > acked)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    #[test]
    fn cursor_moves_only_on_ack() {
        let events = Events::in_memory(100);
        let (feed, _watch) = MemoryFeed::new(events.clone());
        events.raise(Event::config_updated());
        events.raise(Event::manager_connected());
        assert_eq!(feed.depth(), 2);
        let p = feed.pending(10);
        assert_eq!(p.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(feed.pending(1).len(), 1);
        feed.ack(1);
        assert_eq!(feed.pending(10)[0].seq, 2);
        assert_eq!(feed.depth(), 1);
        feed.ack(2);
        assert!(feed.pending(10).is_empty());
    }
}

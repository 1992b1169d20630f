//! Where the manager link takes its events from.
//!
//! The link is written against [`EventFeed`] only; [`LogFeed`] implements it over the event
//! log's delivery API. The log reads its files on the writer thread (`read_after` is async),
//! while the link's writer wants records at once, so a small task keeps a bounded window of
//! the next records here. Acknowledging moves the log's persisted cursor.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
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

/// Records fetched ahead of the link: a few batches of the writer's window.
const WINDOW: usize = 256;
/// While the log is degraded its durable watch stands still; new memory-held records are
/// noticed on this tick instead.
const DEGRADED_POLL: Duration = Duration::from_millis(250);

/// The manager's view of the event log: a delivery cursor with a window of records read
/// ahead from it.
pub struct LogFeed {
    events: Events,
    /// Fetched, not yet acknowledged, oldest first.
    window: RefCell<VecDeque<Record>>,
    /// Highest sequence number fetched into the window.
    fetched: Cell<u64>,
    acked: Cell<u64>,
    /// New records in the window (wakes the link's writer).
    notify: Rc<Notify>,
    /// Room in the window, or an ack (wakes the fetcher).
    room: Notify,
}

impl LogFeed {
    /// The feed, plus the task that fills its window (spawn it on the `LocalSet`).
    pub fn new(events: Events) -> (Rc<LogFeed>, impl std::future::Future<Output = ()>) {
        let acked = events.status().acked_seq;
        let feed = Rc::new(LogFeed {
            events,
            window: RefCell::new(VecDeque::new()),
            fetched: Cell::new(acked),
            acked: Cell::new(acked),
            notify: Rc::new(Notify::new()),
            room: Notify::new(),
        });
        let fill = {
            let feed = feed.clone();
            async move { feed.fill().await }
        };
        (feed, fill)
    }

    async fn fill(&self) {
        let mut durable = self.events.durable_watch();
        loop {
            let room = WINDOW.saturating_sub(self.window.borrow().len());
            if room > 0 {
                let got = self.events.read_after(self.fetched.get(), room).await;
                if !got.is_empty() {
                    let mut w = self.window.borrow_mut();
                    for r in got {
                        // An ack may have overtaken the read: never re-add acknowledged ones.
                        if r.seq > self.fetched.get() && r.seq > self.acked.get() {
                            self.fetched.set(r.seq);
                            w.push_back(r);
                        }
                    }
                    drop(w);
                    self.notify.notify_one();
                    continue;
                }
            }
            let room_freed = self.room.notified();
            tokio::select! {
                _ = room_freed, if room == 0 => {}
                changed = async {
                    match &mut durable {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                }, if room > 0 => {
                    if !changed {
                        durable = None; // the writer is gone (shutdown): poll from now on
                    }
                }
                _ = tokio::time::sleep(DEGRADED_POLL), if room > 0 => {}
            }
        }
    }
}

impl EventFeed for LogFeed {
    fn pending(&self, max: usize) -> Vec<Record> {
        self.window.borrow().iter().take(max).cloned().collect()
    }

    fn ack(&self, seq: u64) {
        if seq <= self.acked.get() {
            return;
        }
        self.acked.set(seq);
        self.window.borrow_mut().retain(|r| r.seq > seq);
        self.fetched.set(self.fetched.get().max(seq));
        self.events.ack(seq);
        self.room.notify_one();
    }

    fn notify(&self) -> Rc<Notify> {
        self.notify.clone()
    }

    fn depth(&self) -> u64 {
        // The log's own acked_seq follows ours within a writer cycle; ours is the newer.
        let st = self.events.status();
        let acked = st.acked_seq.max(self.acked.get());
        st.next_seq.saturating_sub(1).saturating_sub(acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    fn run_local<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    async fn until(feed: &LogFeed, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while feed.pending(usize::MAX).len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "window never filled"
            );
            let _ =
                tokio::time::timeout(Duration::from_millis(100), feed.notify().notified()).await;
        }
    }

    #[test]
    fn window_follows_the_cursor_and_acks_persist_across_restarts() {
        let dir = std::env::temp_dir().join(format!("quoll-feed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = crate::config::StorageConfig::default().log_config();
        run_local(async {
            let (events, _) = Events::open(&dir, cfg);
            let (feed, fill) = LogFeed::new(events.clone());
            let filler = tokio::task::spawn_local(fill);
            for _ in 0..3 {
                events.raise(Event::config_updated());
            }
            until(&feed, 3).await;
            let seqs: Vec<u64> = feed.pending(10).iter().map(|r| r.seq).collect();
            assert_eq!(seqs, [1, 2, 3]);
            assert_eq!(feed.depth(), 3);
            // Not acknowledged: the same records again (at least once).
            assert_eq!(feed.pending(2).len(), 2);
            feed.ack(2);
            assert_eq!(feed.pending(10)[0].seq, 3);
            assert_eq!(feed.depth(), 1);
            filler.abort();
            events.flushed().await;
            events.close();
        });
        run_local(async {
            let (events, _) = Events::open(&dir, cfg);
            let (feed, fill) = LogFeed::new(events.clone());
            let filler = tokio::task::spawn_local(fill);
            events.raise(Event::manager_connected());
            until(&feed, 2).await;
            let seqs: Vec<u64> = feed.pending(10).iter().map(|r| r.seq).collect();
            assert_eq!(seqs, [3, 4], "resumes after the persisted ack");
            filler.abort();
            events.close();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_only_events_feed_too() {
        run_local(async {
            let events = Events::in_memory(100);
            let (feed, fill) = LogFeed::new(events.clone());
            let filler = tokio::task::spawn_local(fill);
            events.raise(Event::config_updated());
            events.raise(Event::manager_connected());
            until(&feed, 2).await;
            feed.ack(1);
            assert_eq!(feed.pending(10).len(), 1);
            assert_eq!(feed.depth(), 1);
            filler.abort();
        });
    }
}

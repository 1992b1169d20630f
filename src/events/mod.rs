//! Operational events: the catalog of `shared/seeds/events-and-alarms.txt` as typed
//! constructors, and the handle every part of Quoll raises them through.
//!
//! This first cut keeps records in memory only; the durable on-flash queue comes behind the
//! same `Events` handle.

pub mod catalog;
pub mod console;
pub mod latch;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::SystemTime;

use serde::Serialize;

pub use catalog::{Category, Event, Severity};

/// An event as recorded: sequence number and raise time attached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub seq: u64,
    pub raised_at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// The handle through which events are raised. Cheap to clone; raising never blocks.
#[derive(Clone)]
pub struct Events {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    next_seq: u64,
    records: VecDeque<Record>,
    capacity: usize,
}

impl Events {
    /// Memory-only events keeping the newest `capacity` records.
    pub fn in_memory(capacity: usize) -> Self {
        Events {
            inner: Rc::new(RefCell::new(Inner {
                next_seq: 1,
                records: VecDeque::new(),
                capacity: capacity.max(1),
            })),
        }
    }

    pub fn raise(&self, event: Event) {
        tracing::info!(category = event.category.as_str(), flow_id = ?event.flow_id, "{}", event.message);
        let mut inner = self.inner.borrow_mut();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.records.len() == inner.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(Record {
            seq,
            raised_at_ms: crate::time::unix_millis(SystemTime::now()),
            event,
        });
    }

    /// The records currently held, oldest first.
    pub fn snapshot(&self) -> Vec<Record> {
        self.inner.borrow().records.iter().cloned().collect()
    }
}

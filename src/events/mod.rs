//! Operational events: the catalog of `shared/seeds/events-and-alarms.txt` as typed
//! constructors, and the handle every part of Quoll raises them through.
//!
//! This first cut keeps records in memory only; the durable on-flash queue comes behind the
//! same `Events` handle.

pub mod console;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub severity: Severity,
    pub category: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

impl Event {
    fn new(
        severity: Severity,
        category: &'static str,
        message: String,
        flow_id: Option<&str>,
    ) -> Self {
        Event {
            severity,
            category,
            message,
            flow_id: flow_id.map(str::to_owned),
            details: Map::new(),
        }
    }

    pub fn flow_started(flow_id: &str) -> Self {
        Self::new(
            Severity::Info,
            "flow",
            format!("Flow '{flow_id}' started"),
            Some(flow_id),
        )
    }
    pub fn flow_stopped(flow_id: &str) -> Self {
        Self::new(
            Severity::Info,
            "flow",
            format!("Flow '{flow_id}' stopped"),
            Some(flow_id),
        )
    }
    pub fn flow_start_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Severity::Critical,
            "flow",
            format!("Flow '{flow_id}' failed to start: {error}"),
            Some(flow_id),
        )
    }
    pub fn flow_input_lost(flow_id: &str, error: &str) -> Self {
        Self::new(
            Severity::Critical,
            "flow",
            format!("Flow input lost: {error}"),
            Some(flow_id),
        )
    }
    pub fn output_added(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Severity::Info,
            "flow",
            format!("Output '{output_id}' added to flow '{flow_id}'"),
            Some(flow_id),
        )
    }
    pub fn output_removed(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Severity::Info,
            "flow",
            format!("Output '{output_id}' removed from flow '{flow_id}'"),
            Some(flow_id),
        )
    }
    pub fn output_start_failed(flow_id: &str, output_id: &str, error: &str) -> Self {
        Self::new(
            Severity::Warning,
            "flow",
            format!("Output '{output_id}' failed to start on flow '{flow_id}': {error}"),
            Some(flow_id),
        )
    }
}

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
        tracing::info!(category = event.category, flow_id = ?event.flow_id, "{}", event.message);
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

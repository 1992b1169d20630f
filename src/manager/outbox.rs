//! The bounded queue between the link and the socket writer.
//!
//! A slow manager (or a stalled TCP window) must never make memory grow or block anything
//! but the writer. So: replies and pings wait in a short bounded queue; health and stats keep
//! only their newest message (an unsent stats is superseded by the next one: "shed", and
//! counted); events are not queued here beyond a small window, because they wait in the
//! event feed, which is durable, and are pulled only when the writer has sent the previous
//! batch. Stats are therefore always shed before an event is held back, and no event is ever
//! dropped for lack of room. Sending order: control, health, events, stats.

use std::collections::VecDeque;

use super::protocol::MAX_MESSAGE_BYTES;

/// At most this many replies wait; beyond that the manager is not reading and will time the
/// commands out anyway.
pub const MAX_CONTROL: usize = 64;
/// Events pulled from the feed per batch.
pub const EVENT_WINDOW: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Ping,
}

/// One frame to write; `seq` is set for an event, to acknowledge once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub frame: Frame,
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    pub stats_shed: u64,
    pub health_shed: u64,
    pub control_dropped: u64,
    /// Messages over 5 MB, never sent.
    pub too_large: u64,
}

#[derive(Debug, Default)]
pub struct Outbox {
    control: VecDeque<Frame>,
    health: Option<String>,
    events: VecDeque<(u64, String)>,
    stats: Option<String>,
    pub counters: OutboxCounters,
}

impl Outbox {
    fn fits(&mut self, text: &str, what: &str) -> bool {
        if text.len() > MAX_MESSAGE_BYTES {
            self.counters.too_large += 1;
            tracing::warn!(
                bytes = text.len(),
                "not sending a {what} message over 5 MB (the manager drops those)"
            );
            return false;
        }
        true
    }

    pub fn push_control(&mut self, frame: Frame) {
        if let Frame::Text(t) = &frame
            && !self.fits(t, "reply")
        {
            return;
        }
        if self.control.len() >= MAX_CONTROL {
            self.counters.control_dropped += 1;
            tracing::warn!("manager not reading: dropped a reply");
            return;
        }
        self.control.push_back(frame);
    }

    pub fn push_health(&mut self, text: String) {
        if self.fits(&text, "health") && self.health.replace(text).is_some() {
            self.counters.health_shed += 1;
        }
    }

    pub fn push_stats(&mut self, text: String) {
        if self.fits(&text, "stats") && self.stats.replace(text).is_some() {
            self.counters.stats_shed += 1;
        }
    }

    /// Whether the writer may pull the next batch from the feed.
    pub fn wants_events(&self) -> bool {
        self.events.is_empty()
    }

    /// Queue an event. `false` if it is too large to ever send: the caller acknowledges it
    /// so it cannot block the queue behind it.
    pub fn push_event(&mut self, seq: u64, text: String) -> bool {
        if !self.fits(&text, "event") {
            return false;
        }
        self.events.push_back((seq, text));
        true
    }

    /// Drop what belongs to a connection that is gone. Events stay in the feed.
    pub fn clear(&mut self) {
        self.control.clear();
        self.health = None;
        self.events.clear();
        self.stats = None;
    }

    pub fn pop(&mut self) -> Option<Out> {
        if let Some(frame) = self.control.pop_front() {
            return Some(Out { frame, seq: None });
        }
        if let Some(t) = self.health.take() {
            return Some(Out {
                frame: Frame::Text(t),
                seq: None,
            });
        }
        if let Some((seq, t)) = self.events.pop_front() {
            return Some(Out {
                frame: Frame::Text(t),
                seq: Some(seq),
            });
        }
        self.stats.take().map(|t| Out {
            frame: Frame::Text(t),
            seq: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_shedding() {
        let mut o = Outbox::default();
        o.push_stats("s1".into());
        o.push_stats("s2".into());
        o.push_event(1, "e1".into());
        o.push_health("h".into());
        o.push_control(Frame::Text("ack".into()));
        let order: Vec<_> = std::iter::from_fn(|| o.pop()).collect();
        let texts: Vec<_> = order
            .iter()
            .map(|o| match &o.frame {
                Frame::Text(t) => t.as_str(),
                Frame::Ping => "ping",
            })
            .collect();
        assert_eq!(texts, ["ack", "h", "e1", "s2"]);
        assert_eq!(order[2].seq, Some(1));
        assert_eq!(o.counters.stats_shed, 1);
    }

    #[test]
    fn bounded_and_size_capped() {
        let mut o = Outbox::default();
        for _ in 0..MAX_CONTROL + 5 {
            o.push_control(Frame::Ping);
        }
        assert_eq!(o.counters.control_dropped, 5);
        assert!(!o.push_event(1, "x".repeat(MAX_MESSAGE_BYTES + 1)));
        o.push_stats("y".repeat(MAX_MESSAGE_BYTES + 1));
        assert_eq!(o.counters.too_large, 2);
        assert_eq!(std::iter::from_fn(|| o.pop()).count(), MAX_CONTROL);
    }
}

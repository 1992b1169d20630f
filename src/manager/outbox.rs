//! The bounded queue between the link and the socket writer.
//!
//! A slow manager (or a stalled TCP window) must never make memory grow or block anything
//! but the writer. So: replies and pings wait in a short bounded queue; health and stats keep
//! only their newest message (an unsent stats is superseded by the next one: "shed", and
//! counted); events are not queued here beyond a small window, because they wait in the
//! event feed, which is durable, and are pulled only when the writer has sent the previous
//! batch. Stats are therefore always shed before an event is held back, and no event is ever
//! dropped for lack of room. Sending order: control, health, events, stats.
//!
//! An event too large to ever send (over the manager's 5 MB) must not stall the queue
//! behind it: it stays in its place as a skip, which the writer acknowledges without writing
//! once everything before it was written (acknowledgements are cumulative, so acknowledging
//! it early would also acknowledge the events still waiting before it).

use std::collections::VecDeque;

use super::protocol::MAX_MESSAGE_BYTES;
use crate::secret::Secret;

/// At most this many replies wait; beyond that the manager is not reading and will time the
/// commands out anyway.
pub const MAX_CONTROL: usize = 64;
/// Events pulled from the feed per batch.
pub const EVENT_WINDOW: usize = 32;

/// A frame to write. A text frame is held as a [`Secret`] (its `Debug` shows nothing): the
/// `auth` frame holds the node's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Secret),
    Ping,
}

/// One frame to write; `seq` is set for an event, to acknowledge once written. An event
/// that could not be sent comes out as `frame: None` with its `seq`: acknowledge it, write
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub frame: Option<Frame>,
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    pub stats_shed: u64,
    pub health_shed: u64,
    pub control_dropped: u64,
    /// Messages over 5 MB, never sent.
    pub too_large: u64,
    /// Of those, events: skipped in their place in the queue (acknowledged, not written).
    pub events_skipped: u64,
}

#[derive(Debug, Default)]
pub struct Outbox {
    control: VecDeque<Frame>,
    health: Option<String>,
    /// `None`: an event too large to send, acknowledged in its turn.
    events: VecDeque<(u64, Option<String>)>,
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
            && !self.fits(t.expose(), "reply")
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

    /// Queue an event. `false` if it is too large to ever send: it is then queued as a
    /// skip (counted), which [`Outbox::pop`] hands out in its turn for the writer to
    /// acknowledge without writing, so it can neither stall the queue nor be acknowledged
    /// before the events ahead of it were written.
    pub fn push_event(&mut self, seq: u64, text: String) -> bool {
        if !self.fits(&text, "event") {
            self.counters.events_skipped += 1;
            self.events.push_back((seq, None));
            return false;
        }
        self.events.push_back((seq, Some(text)));
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
            return Some(Out {
                frame: Some(frame),
                seq: None,
            });
        }
        if let Some(t) = self.health.take() {
            return Some(Out {
                frame: Some(Frame::Text(t.into())),
                seq: None,
            });
        }
        if let Some((seq, t)) = self.events.pop_front() {
            return Some(Out {
                frame: t.map(|t| Frame::Text(t.into())),
                seq: Some(seq),
            });
        }
        self.stats.take().map(|t| Out {
            frame: Some(Frame::Text(t.into())),
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
                Some(Frame::Text(t)) => t.expose(),
                Some(Frame::Ping) => "ping",
                None => "skip",
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
        o.push_stats("y".repeat(MAX_MESSAGE_BYTES + 1));
        assert_eq!(o.counters.too_large, 1);
        assert_eq!(std::iter::from_fn(|| o.pop()).count(), MAX_CONTROL);
    }

    #[test]
    fn an_event_too_large_to_send_is_skipped_in_its_turn() {
        let mut o = Outbox::default();
        assert!(o.push_event(1, "e1".into()));
        assert!(!o.push_event(2, "x".repeat(MAX_MESSAGE_BYTES + 1)));
        assert!(o.push_event(3, "e3".into()));
        let out: Vec<_> = std::iter::from_fn(|| o.pop()).collect();
        assert_eq!(
            out,
            [
                Out {
                    frame: Some(Frame::Text("e1".into())),
                    seq: Some(1)
                },
                Out {
                    frame: None,
                    seq: Some(2)
                },
                Out {
                    frame: Some(Frame::Text("e3".into())),
                    seq: Some(3)
                },
            ]
        );
        assert_eq!((o.counters.too_large, o.counters.events_skipped), (1, 1));
        // Alone in its batch: still handed out (to be acknowledged), never stuck.
        assert!(!o.push_event(4, "x".repeat(MAX_MESSAGE_BYTES + 1)));
        assert!(!o.wants_events());
        assert_eq!(
            o.pop(),
            Some(Out {
                frame: None,
                seq: Some(4)
            })
        );
        assert!(o.wants_events());
    }

    #[test]
    fn debug_shows_no_frame_text() {
        let f = Frame::Text(r#"{"type":"auth","payload":{"node_secret":"s3cret"}}"#.into());
        let mut o = Outbox::default();
        o.push_control(f.clone());
        let text = format!("{f:?} {o:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}

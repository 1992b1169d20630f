//! The upload queue, sans-IO: which request the shell sends next, when, and what a result
//! means for the queue, the remote playlist and the events.
//!
//! - Segments wait in a bounded queue ([`UploadQueue::new`]'s `capacity`, the playlist
//!   size: a segment older than the window is of no use to a viewer). A new segment that
//!   finds it full drops the oldest waiting one, counted in [`UploadQueue::dropped`]; the
//!   queue never grows. The next segment after a hole is marked as a discontinuity.
//! - One request at a time, in this order: the playlist when a segment was stored since it
//!   was last sent (so each stored segment is named at once), else the oldest segment, else
//!   a DELETE of a segment that slid out of the remote playlist.
//! - A failed PUT is retried after the shared [`Backoff`]'s delay; a success starts it
//!   afresh. A DELETE is tried once (an expired segment left behind costs the ingest some
//!   disk, nothing more), and an answer of 405 or 501 turns DELETEs off for the run.
//! - The remote playlist names only segments that were stored, so a viewer never meets a
//!   404 for a segment the queue dropped.
//! - "HLS segment upload failed" is latched: [`UploadQueue::finished`] returns the error
//!   for the first failed PUT of a failing run, and nothing for the next ones until a PUT
//!   succeeds again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::playlist::Playlist;
use crate::net::reconnect::Backoff;

/// DELETEs waiting at most: the window's worth twice over, then the oldest are forgotten.
const MAX_DELETES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// One request for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Relative to the ingest URL's directory.
    pub name: String,
    pub body: Bytes,
    pub content_type: &'static str,
}

/// How a request ended, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status.
    Status(u16),
    /// No answer: connection, TLS or time-out, as text for the event.
    Failed(String),
}

/// What the shell does next ([`UploadQueue::poll`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Send(Request),
    /// Backing off: nothing before this instant (or a new segment).
    Wait(Instant),
    /// Nothing to send until a new segment comes.
    Idle,
    /// A request is out: wait for [`UploadQueue::finished`].
    Busy,
}

#[derive(Debug, Clone)]
struct Queued {
    name: String,
    data: Bytes,
    duration: Duration,
    date_ms: Option<u64>,
    /// A segment before this one was dropped.
    discontinuity: bool,
}

#[derive(Debug, Clone)]
enum InFlight {
    Segment(Queued),
    Playlist,
    Delete,
}

pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
pub const SEGMENT_CONTENT_TYPE: &str = "video/mp2t";

pub struct UploadQueue {
    capacity: usize,
    segments: VecDeque<Queued>,
    deletes: VecDeque<String>,
    playlist: Playlist,
    playlist_name: String,
    playlist_dirty: bool,
    in_flight: Option<InFlight>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    delete_enabled: bool,
    /// A drop happened since the last segment queued.
    hole: bool,
    failing: bool,
    dropped: u64,
    stored: u64,
    failures: u64,
}

impl UploadQueue {
    /// A queue of at most `capacity` segments (at least 1) for a remote `playlist` stored as
    /// `playlist_name`, retrying with `backoff`.
    pub fn new(
        capacity: usize,
        playlist: Playlist,
        playlist_name: String,
        backoff: Backoff,
    ) -> Self {
        UploadQueue {
            capacity: capacity.max(1),
            segments: VecDeque::new(),
            deletes: VecDeque::new(),
            playlist,
            playlist_name,
            playlist_dirty: false,
            in_flight: None,
            backoff,
            retry_at: None,
            delete_enabled: true,
            hole: false,
            failing: false,
            dropped: 0,
            stored: 0,
            failures: 0,
        }
    }

    /// Queue a finished segment, dropping the oldest waiting one if the queue is full.
    pub fn push_segment(
        &mut self,
        name: String,
        data: Bytes,
        duration: Duration,
        date_ms: Option<u64>,
    ) {
        let discontinuity = std::mem::take(&mut self.hole);
        self.segments.push_back(Queued {
            name,
            data,
            duration,
            date_ms,
            discontinuity,
        });
        self.bound();
    }

    fn bound(&mut self) {
        while self.segments.len() > self.capacity {
            self.segments.pop_front();
            self.dropped += 1;
            if let Some(next) = self.segments.front_mut() {
                next.discontinuity = true;
            } else {
                self.hole = true;
            }
        }
    }

    /// The next request, if one is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Next {
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return Next::Wait(at);
            }
            self.retry_at = None;
        }
        if self.playlist_dirty {
            self.in_flight = Some(InFlight::Playlist);
            return Next::Send(Request {
                method: Method::Put,
                name: self.playlist_name.clone(),
                body: Bytes::from(self.playlist.render()),
                content_type: PLAYLIST_CONTENT_TYPE,
            });
        }
        if let Some(seg) = self.segments.pop_front() {
            let req = Request {
                method: Method::Put,
                name: seg.name.clone(),
                body: seg.data.clone(),
                content_type: SEGMENT_CONTENT_TYPE,
            };
            self.in_flight = Some(InFlight::Segment(seg));
            return Next::Send(req);
        }
        if self.delete_enabled
            && let Some(name) = self.deletes.pop_front()
        {
            self.in_flight = Some(InFlight::Delete);
            return Next::Send(Request {
                method: Method::Delete,
                name,
                body: Bytes::new(),
                content_type: SEGMENT_CONTENT_TYPE,
            });
        }
        Next::Idle
    }

    /// The request from the last [`Next::Send`] ended. Returns the error to raise as "HLS
    /// segment upload failed", once per failing run.
    pub fn finished(&mut self, now: Instant, outcome: Outcome) -> Option<String> {
        let job = self.in_flight.take()?;
        let ok = matches!(outcome, Outcome::Status(200..=299));
        match job {
            InFlight::Delete => {
                // 404: already gone, which is what was asked.
                if matches!(outcome, Outcome::Status(405 | 501)) {
                    self.delete_enabled = false;
                    self.deletes.clear();
                }
                None
            }
            InFlight::Playlist if ok => {
                self.playlist_dirty = false;
                self.succeeded();
                None
            }
            InFlight::Segment(seg) if ok => {
                self.stored += 1;
                let gone =
                    self.playlist
                        .push(seg.name, seg.duration, seg.date_ms, seg.discontinuity);
                if let Some(gone) = gone
                    && self.delete_enabled
                {
                    self.deletes.push_back(gone.uri);
                    if self.deletes.len() > MAX_DELETES {
                        self.deletes.pop_front();
                    }
                }
                self.playlist_dirty = true;
                self.succeeded();
                None
            }
            InFlight::Playlist => self.failed(now, &self.playlist_name.clone(), outcome),
            InFlight::Segment(seg) => {
                let name = seg.name.clone();
                // Back at the head, for the retry; a full queue drops it first.
                self.segments.push_front(seg);
                self.bound();
                self.failed(now, &name, outcome)
            }
        }
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.failing = false;
    }

    fn failed(&mut self, now: Instant, name: &str, outcome: Outcome) -> Option<String> {
        self.failures += 1;
        self.retry_at = Some(now + self.backoff.next_delay());
        let error = match outcome {
            Outcome::Status(s) => format!("PUT {name}: HTTP {s}"),
            Outcome::Failed(e) => format!("PUT {name}: {e}"),
        };
        (!std::mem::replace(&mut self.failing, true)).then_some(error)
    }

    /// A PUT failed and none has succeeded since.
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Segments dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Segments the ingest stored.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Failed PUTs (every one, latched or not).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Segments waiting (not counting one in flight).
    pub fn waiting(&self) -> usize {
        self.segments.len()
    }

    pub fn deletes_enabled(&self) -> bool {
        self.delete_enabled
    }

    /// The playlist as the ingest has it (or is about to).
    pub fn playlist(&self) -> &Playlist {
        &self.playlist
    }
}

#[cfg(test)]
mod tests;

//! HLS output, sans-IO: cutting the flow's TS into segments (`segmenter`), the live media
//! playlist (`playlist`), and the upload queue that pushes both to an ingest server by HTTP
//! PUT (`upload`). The async shell is `output/hls.rs`; the API serves the same playlist from
//! memory through [`Published`]. docs/hls.md is the operator's view.

pub mod playlist;
pub mod segmenter;
pub mod upload;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use playlist::Playlist;

/// The playlist's file name, in memory and (unless the ingest URL names one) on the ingest.
pub const PLAYLIST_NAME: &str = "index.m3u8";

/// A segment's file name.
pub fn segment_name(seq: u64) -> String {
    format!("seg-{seq}.ts")
}

/// The last segments of one output and the playlist naming them, served by the API. Holds
/// at most the playlist's window of segments.
pub struct LiveWindow {
    playlist: Playlist,
    segments: VecDeque<(String, Bytes)>,
}

impl LiveWindow {
    pub fn new(size: usize, target: Duration, first_seq: u64) -> Self {
        LiveWindow {
            playlist: Playlist::new(size, target, first_seq),
            segments: VecDeque::with_capacity(size + 1),
        }
    }

    /// Add a segment; the one that slid out of the window is forgotten.
    pub fn push(&mut self, name: String, data: Bytes, duration: Duration, date_ms: Option<u64>) {
        if let Some(gone) = self.playlist.push(name.clone(), duration, date_ms, false) {
            self.segments.retain(|(n, _)| *n != gone.uri);
        }
        self.segments.push_back((name, data));
    }

    pub fn playlist(&self) -> String {
        self.playlist.render()
    }

    /// A segment the playlist names.
    pub fn segment(&self, name: &str) -> Option<Bytes> {
        self.segments
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
    }

    /// Segments held (at most the window).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// The live windows of the running HLS outputs, by (flow id, output id): the outputs add
/// theirs when they start and remove it when they stop, the API reads them.
#[derive(Clone, Default)]
pub struct Published(Rc<RefCell<Windows>>);

/// The windows by (flow id, output id).
type Windows = BTreeMap<(String, String), Rc<RefCell<LiveWindow>>>;

/// What a GET under `/hls/` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    Playlist(String),
    Segment(Bytes),
}

impl Published {
    /// Publish `window` until the returned guard is dropped.
    pub fn publish(
        &self,
        flow_id: &str,
        output_id: &str,
        window: Rc<RefCell<LiveWindow>>,
    ) -> PublishGuard {
        let key = (flow_id.to_owned(), output_id.to_owned());
        self.0.borrow_mut().insert(key.clone(), window.clone());
        PublishGuard {
            map: self.clone(),
            key,
            window,
        }
    }

    /// The playlist (`index.m3u8`) or a segment it names, of a running output.
    pub fn get(&self, flow_id: &str, output_id: &str, name: &str) -> Option<Served> {
        let map = self.0.borrow();
        let w = map
            .get(&(flow_id.to_owned(), output_id.to_owned()))?
            .borrow();
        if name == PLAYLIST_NAME {
            Some(Served::Playlist(w.playlist()))
        } else {
            w.segment(name).map(Served::Segment)
        }
    }
}

/// Removes a window from [`Published`] when its output stops (also when its task is
/// aborted).
pub struct PublishGuard {
    map: Published,
    key: (String, String),
    window: Rc<RefCell<LiveWindow>>,
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let mut map = self.map.0.borrow_mut();
        // A newer run of the same output may have replaced it: leave that one.
        if map
            .get(&self.key)
            .is_some_and(|w| Rc::ptr_eq(w, &self.window))
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_only_the_segments_its_playlist_names() {
        let mut w = LiveWindow::new(2, Duration::from_secs(2), 0);
        for i in 0..5 {
            w.push(
                segment_name(i),
                Bytes::from(vec![i as u8]),
                Duration::from_secs(2),
                None,
            );
        }
        assert_eq!(w.len(), 2);
        assert!(w.segment("seg-2.ts").is_none());
        assert_eq!(w.segment("seg-4.ts").unwrap()[..], [4]);
        assert!(w.playlist().contains("#EXT-X-MEDIA-SEQUENCE:3\n"));
    }

    #[test]
    fn published_windows_go_away_with_their_guard() {
        let p = Published::default();
        let w = Rc::new(RefCell::new(LiveWindow::new(2, Duration::from_secs(2), 0)));
        w.borrow_mut().push(
            "seg-0.ts".into(),
            Bytes::from_static(b"x"),
            Duration::from_secs(2),
            None,
        );
        let guard = p.publish("f", "o", w.clone());
        assert!(matches!(
            p.get("f", "o", PLAYLIST_NAME),
            Some(Served::Playlist(_))
        ));
        assert_eq!(
            p.get("f", "o", "seg-0.ts"),
            Some(Served::Segment(Bytes::from_static(b"x")))
        );
        assert_eq!(p.get("f", "o", "seg-9.ts"), None);
        assert_eq!(p.get("f", "x", PLAYLIST_NAME), None);
        // A restart publishes its new window before the old task's guard is dropped.
        let w2 = Rc::new(RefCell::new(LiveWindow::new(2, Duration::from_secs(2), 0)));
        let guard2 = p.publish("f", "o", w2);
        drop(guard);
        assert!(p.get("f", "o", PLAYLIST_NAME).is_some());
        drop(guard2);
        assert!(p.get("f", "o", PLAYLIST_NAME).is_none());
    }
}

//! The live media playlist (RFC 8216): a sliding window of the last `size` segments.
//!
//! The playlist numbers its own entries: `EXT-X-MEDIA-SEQUENCE` is the number of the first
//! entry and each following one is one more, so a playlist that skipped a segment (the
//! upload queue dropped it) still numbers consistently from one version to the next. The
//! skipped segment leaves a hole in the timestamps, so the entry after it carries
//! `EXT-X-DISCONTINUITY`; once such entries slide out, `EXT-X-DISCONTINUITY-SEQUENCE` counts
//! them, as RFC 8216 4.3.3.3 requires.
//!
//! `EXT-X-TARGETDURATION` is the configured target rounded up, raised to the rounded-up
//! length of the longest segment this playlist has ever held (sparse key frames make
//! segments longer than the target): every EXTINF is at most the target duration, and the
//! target duration never goes down.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

/// One segment as the playlist names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Media sequence number (the playlist's own count).
    pub seq: u64,
    /// The URI, relative to the playlist.
    pub uri: String,
    pub duration: Duration,
    /// Wall-clock time of the segment's first frame (ms since the Unix epoch), for
    /// `EXT-X-PROGRAM-DATE-TIME`.
    pub date_ms: Option<u64>,
    /// A segment is missing before this one.
    pub discontinuity: bool,
}

#[derive(Debug, Clone)]
pub struct Playlist {
    size: usize,
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// Whole seconds, never decreasing.
    target_secs: u64,
    /// `EXT-X-DISCONTINUITY` tags that slid out of the window.
    discontinuity_seq: u64,
}

impl Playlist {
    /// A window of `size` (at least 1) segments numbered from `first_seq`, for segments of
    /// `target` duration.
    pub fn new(size: usize, target: Duration, first_seq: u64) -> Self {
        Playlist {
            size: size.max(1),
            entries: VecDeque::with_capacity(size.max(1) + 1),
            next_seq: first_seq,
            target_secs: ceil_secs(target).max(1),
            discontinuity_seq: 0,
        }
    }

    /// Append a segment; returns the entry that slid out of the window, if any.
    pub fn push(
        &mut self,
        uri: String,
        duration: Duration,
        date_ms: Option<u64>,
        discontinuity: bool,
    ) -> Option<Entry> {
        self.target_secs = self.target_secs.max(ceil_secs(duration));
        self.entries.push_back(Entry {
            seq: self.next_seq,
            uri,
            duration,
            date_ms,
            discontinuity,
        });
        self.next_seq += 1;
        if self.entries.len() <= self.size {
            return None;
        }
        let gone = self.entries.pop_front()?;
        if gone.discontinuity {
            self.discontinuity_seq += 1;
        }
        Some(gone)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn target_secs(&self) -> u64 {
        self.target_secs
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(128 + 64 * self.entries.len());
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        s.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", self.target_secs);
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if self.discontinuity_seq > 0 {
            let _ = writeln!(
                s,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_seq
            );
        }
        for e in &self.entries {
            if e.discontinuity {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(ms) = e.date_ms {
                let _ = writeln!(
                    s,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    crate::time::rfc3339_millis(ms)
                );
            }
            let ms = e.duration.as_millis();
            let _ = writeln!(s, "#EXTINF:{}.{:03},\n{}", ms / 1000, ms % 1000, e.uri);
        }
        s
    }
}

/// Whole seconds, rounded up to the millisecond the playlist prints.
fn ceil_secs(d: Duration) -> u64 {
    (d.as_millis() as u64).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn renders_the_window_exactly() {
        let mut p = Playlist::new(3, ms(2000), 10);
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n"
        );
        assert_eq!(p.push("10.ts".into(), ms(2000), None, false), None);
        assert_eq!(p.push("11.ts".into(), ms(1960), None, false), None);
        assert_eq!(p.push("12.ts".into(), ms(2040), None, false), None);
        let gone = p.push("13.ts".into(), ms(2000), None, false).unwrap();
        assert_eq!((gone.seq, gone.uri.as_str()), (10, "10.ts"));
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:11\n\
             #EXTINF:1.960,\n11.ts\n#EXTINF:2.040,\n12.ts\n#EXTINF:2.000,\n13.ts\n"
        );
    }

    #[test]
    fn target_duration_is_the_ceiling_of_the_longest_and_never_drops() {
        let mut p = Playlist::new(2, ms(2000), 0);
        p.push("a".into(), ms(6001), None, false);
        assert_eq!(p.target_secs(), 7);
        p.push("b".into(), ms(2000), None, false);
        p.push("c".into(), ms(2000), None, false);
        assert!(p.entries().all(|e| e.duration <= ms(7000)));
        assert_eq!(
            p.target_secs(),
            7,
            "the long segment is gone, the target stays"
        );
        // A sub-second target is still a whole second.
        assert_eq!(Playlist::new(1, ms(500), 0).target_secs(), 1);
    }

    #[test]
    fn dates_and_discontinuities() {
        let mut p = Playlist::new(2, ms(2000), 0);
        p.push("0.ts".into(), ms(2000), Some(1_780_000_000_000), false);
        p.push("2.ts".into(), ms(2000), Some(1_780_000_004_000), true);
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-05-28T20:26:40.000Z\n#EXTINF:2.000,\n0.ts\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-05-28T20:26:44.000Z\n\
             #EXTINF:2.000,\n2.ts\n"
        );
        p.push("3.ts".into(), ms(2000), None, false);
        p.push("4.ts".into(), ms(2000), None, false);
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }
}

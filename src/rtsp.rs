//! Pulling an RTSP camera with retina and remuxing it to MPEG-TS, no transcoding.
//!
//! Shared by the `rtsp` flow input (`input/rtsp.rs`) and the bridge's in-process worker.
//! retina does RTSP, RTP and depacketization (TCP interleaved by default, UDP on request;
//! basic and digest auth); its `FrameFormat::SIMPLE` hands over H.264/H.265 access units in
//! Annex B with parameter sets before every key frame and AAC in ADTS, which is what a TS
//! carries, so `ts::mux` only packetizes.

use std::time::Duration;

use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

use crate::net::gate::{self, RecvGate};
use crate::ts::mux::{StreamKind, TsMuxer, to_90k};

/// Timestamps start this far into the 90 kHz clock, so the PCR (which runs behind) is
/// never negative.
const TS_OFFSET_90K: u64 = 90_000;

/// Where and how to pull.
#[derive(Clone)]
pub struct Source {
    /// Without userinfo: credentials go in `creds`.
    pub url: Url,
    pub creds: Option<Credentials>,
    pub udp: bool,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.url.as_str())
            .field("auth", &self.creds.is_some())
            .field("udp", &self.udp)
            .finish()
    }
}

impl Source {
    /// `username`/`password` fields win over credentials in the URL's userinfo.
    pub fn new(
        rtsp_url: &str,
        username: Option<&str>,
        password: Option<&str>,
        transport: &str,
    ) -> Result<Source, String> {
        let mut url = Url::parse(rtsp_url).map_err(|e| format!("rtsp_url: {e}"))?;
        if url.scheme() != "rtsp" {
            return Err(format!("rtsp_url: scheme {:?} is not rtsp", url.scheme()));
        }
        let url_user = percent_decode(url.username());
        let url_pass = url.password().map(percent_decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let user = username
            .map(str::to_owned)
            .or_else(|| (!url_user.is_empty()).then_some(url_user));
        let creds = user.map(|username| Credentials {
            username,
            password: password.map(str::to_owned).or(url_pass).unwrap_or_default(),
        });
        Ok(Source {
            url,
            creds,
            udp: transport == "udp",
        })
    }

    /// The URL as it may be shown in events and logs (no credentials).
    pub fn shown(&self) -> &str {
        self.url.as_str()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// A playing session: each `next` appends the TS of one frame.
pub struct Puller {
    demuxed: Demuxed,
    mux: TsMuxer,
    /// retina stream index -> muxer index.
    map: Vec<Option<usize>>,
    /// What was set up, for logs: `h264+aac`.
    pub codecs: String,
    /// Whether a video stream was set up, and whether its first key frame has come: until
    /// then nothing is written, so the TS starts decodable (PAT, PMT, a key frame).
    has_video: bool,
    keyed: bool,
    /// Whether the last `next` wrote a video frame (or there is no video): a good moment
    /// to hand the TS on, so audio frames travel with the next video frame.
    pub flush_point: bool,
    /// The RTSP connection's socket (TCP transport, when it could be told apart), for
    /// [`Puller::hold`]. Declared before `demuxed` is dropped: see `Drop`.
    gate: Option<RecvGate>,
    held: bool,
    /// Let through by `pass`, held again once retina has read the socket dry.
    open: Open,
}

/// Where a held connection is between two ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Held,
    /// `pass` lowered the mark; the reactor has not delivered the readiness yet, so a
    /// Pending now says nothing about the socket.
    Released,
    /// Retina has read since: its next Pending is an `EAGAIN`, the socket is dry.
    Reading,
}

impl Drop for Puller {
    /// A held socket goes back to the default before retina (dropped after this) tears the
    /// session down, so nothing it still reads waits for a tick that will not come.
    fn drop(&mut self) {
        if self.held
            && let Some(g) = &self.gate
        {
            let _ = g.release();
        }
    }
}

/// DESCRIBE, SETUP every H.264/H.265/AAC stream, PLAY. The whole exchange is bounded by
/// `timeout`.
pub async fn connect(src: &Source, timeout: Duration) -> Result<Puller, String> {
    match tokio::time::timeout(timeout, connect_inner(src)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

async fn connect_inner(src: &Source) -> Result<Puller, String> {
    let opts = SessionOptions::default()
        .creds(src.creds.clone())
        .user_agent(format!("quoll/{}", env!("CARGO_PKG_VERSION")));
    // The RTSP connection is opened by DESCRIBE: the descriptors open before it tell
    // retina's socket apart afterwards (`net::gate`).
    let fds_before = (!src.udp).then(gate::open_fds);
    let mut session = Session::describe(src.url.clone(), opts)
        .await
        .map_err(|e| e.to_string())?;
    let port = src.url.port().unwrap_or(554);
    let gate = fds_before.and_then(|before| RecvGate::find_new(&before, port));
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    let mut map = vec![None; session.streams().len()];
    let picks: Vec<(usize, StreamKind, &'static str)> = session
        .streams()
        .iter()
        .enumerate()
        .filter_map(
            |(i, s)| match (s.media(), s.encoding_name().to_ascii_lowercase().as_str()) {
                ("video", "h264") => Some((i, StreamKind::H264, "h264")),
                ("video", "h265") => Some((i, StreamKind::H265, "h265")),
                ("audio", "mpeg4-generic") => Some((i, StreamKind::AacAdts, "aac")),
                _ => None,
            },
        )
        .collect();
    if picks.is_empty() {
        return Err("the camera offers no H.264, H.265 or AAC stream".into());
    }
    for (i, kind, name) in picks {
        let transport = if src.udp {
            Transport::Udp(UdpTransportOptions::default())
        } else {
            Transport::Tcp(TcpTransportOptions::default())
        };
        session
            .setup(
                i,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::SIMPLE),
            )
            .await
            .map_err(|e| e.to_string())?;
        map[i] = Some(kinds.len());
        kinds.push(kind);
        names.push(name);
    }
    let playing = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let demuxed = playing.demuxed().map_err(|e| e.to_string())?;
    Ok(Puller {
        demuxed,
        has_video: kinds.iter().any(|k| k.is_video()),
        keyed: false,
        flush_point: false,
        gate,
        held: false,
        open: Open::Held,
        mux: TsMuxer::new(&kinds),
        map,
        codecs: names.join("+"),
    })
}

impl Puller {
    /// Hold back the connection's wake-ups until [`pass`](Self::pass) (see `net::gate`).
    /// False when that cannot be done (UDP transport, socket not found, setsockopt
    /// refused): the caller then reads as data comes, without ticking.
    pub fn hold(&mut self) -> bool {
        self.held = self.gate.as_ref().is_some_and(|g| g.hold().is_ok());
        self.held
    }

    /// Let what the held connection queued through: the next `next` calls read it all,
    /// and the first one that finds the socket dry holds it again. (It cannot be held again
    /// at once: epoll asks the socket whether it is readable when it hands the event out,
    /// and a held socket says no.)
    pub fn pass(&mut self) {
        if self.held
            && self.open == Open::Held
            && let Some(g) = &self.gate
        {
            match g.release() {
                Ok(()) => self.open = Open::Released,
                Err(e) => {
                    // Cannot happen on an open socket; if it does, stop holding, not stall.
                    tracing::warn!("rtsp: SO_RCVLOWAT: {e}");
                    self.held = false;
                }
            }
        }
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Waits for the next frame and appends its TS packets to `out` (possibly none, for
    /// items that are not frames). An error or the end of the stream ends the session.
    pub async fn next(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.flush_point = !self.has_video;
        let item = std::future::poll_fn(|cx| {
            let p = self.demuxed.poll_next_unpin(cx);
            match (p.is_pending(), self.open) {
                (false, Open::Released) => self.open = Open::Reading,
                // Retina read until EAGAIN and waits for readability: hold the socket
                // again, so what comes next waits for the next `pass`.
                (true, Open::Reading) => {
                    self.open = Open::Held;
                    if let Some(g) = &self.gate
                        && g.hold().is_err()
                    {
                        self.held = false;
                    }
                }
                _ => {}
            }
            p
        })
        .await;
        match item {
            None => Err("the camera ended the stream".into()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(CodecItem::VideoFrame(f))) => {
                if let Some(Some(idx)) = self.map.get(f.stream_id()) {
                    let key = f.is_random_access_point();
                    self.keyed |= key;
                    if self.keyed {
                        self.flush_point = true;
                        let ts = f.timestamp();
                        let pts = to_90k(ts.elapsed(), ts.clock_rate().get(), TS_OFFSET_90K);
                        self.mux.write_frame(*idx, pts, key, f.data(), out);
                    }
                }
                Ok(())
            }
            Some(Ok(CodecItem::AudioFrame(f))) => {
                if let Some(Some(idx)) = self.map.get(f.stream_id())
                    && (self.keyed || !self.has_video)
                {
                    let ts = f.timestamp();
                    let pts = to_90k(ts.elapsed(), ts.clock_rate().get(), TS_OFFSET_90K);
                    self.mux.write_frame(*idx, pts, false, f.data(), out);
                }
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_fields_or_userinfo() {
        let s = Source::new("rtsp://adm%40x:p%3Aw@cam:554/live", None, None, "tcp").unwrap();
        assert_eq!(s.url.as_str(), "rtsp://cam:554/live");
        let c = s.creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("adm@x", "p:w"));
        let s = Source::new("rtsp://a:b@cam/x", Some("u"), Some("p"), "udp").unwrap();
        let c = s.creds.clone().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        assert!(s.udp);
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "Debug shows no password"
        );
        assert!(
            Source::new("rtsp://cam/x", None, None, "tcp")
                .unwrap()
                .creds
                .is_none()
        );
        assert!(Source::new("http://cam/x", None, None, "tcp").is_err());
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}

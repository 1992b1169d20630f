//! Pulling an RTSP camera with retina and remuxing it to MPEG-TS, no transcoding.
//!
//! Shared by the `rtsp` flow input (`input/rtsp.rs`) and the bridge's in-process worker.
//! retina does RTSP, RTP and depacketization (TCP interleaved by default, UDP on request;
//! basic and digest auth); its `FrameFormat::SIMPLE` hands over H.264/H.265 access units in
//! Annex B with parameter sets before every key frame and AAC in ADTS, which is what a TS
//! carries, so `ts::mux` only packetizes.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

use crate::config::RtspTransport;
use crate::net::gate::{self, LowWater, MAX_HOLD, RecvGate};
use crate::net::outbound::{self, OutboundError, Policy};
use crate::ts::mux::{StreamKind, TsMuxer, to_90k};

/// RTSP's port when a URL names none.
const RTSP_PORT: u16 = 554;

/// Timestamps start this far into the 90 kHz clock, so the PCR (which runs behind) is
/// never negative.
const TS_OFFSET_90K: u64 = 90_000;

/// Why a camera URL cannot be pulled from (found before any connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// `rtsp_url` does not parse as a URL.
    Url(url::ParseError),
    /// `rtsp_url` is a URL of another scheme.
    Scheme(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Url(e) => write!(f, "rtsp_url: {e}"),
            SourceError::Scheme(scheme) => write!(f, "rtsp_url: scheme {scheme:?} is not rtsp"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Why a connection to a camera failed or a playing session ended. `Display` is the text
/// events and exits carry ("RTSP input disconnected: {error}").
#[derive(Debug)]
pub enum RtspError {
    /// The camera's address is refused by `security.outbound_allow`, or does not resolve.
    Outbound(OutboundError),
    /// The checked address could not be written into the URL.
    Pin { url: String, ip: IpAddr },
    /// DESCRIBE..PLAY took longer than the connect timeout.
    Timeout(Duration),
    /// retina refused or lost the session (RTSP, RTP, transport).
    Session(retina::Error),
    /// The camera offers nothing `ts::mux` carries.
    NoStreams,
    /// The camera closed the stream.
    Ended,
}

impl std::fmt::Display for RtspError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtspError::Outbound(e) => e.fmt(f),
            RtspError::Pin { url, ip } => write!(f, "cannot connect {url} to {ip}"),
            RtspError::Timeout(t) => write!(f, "no answer within {} s", t.as_secs()),
            RtspError::Session(e) => e.fmt(f),
            RtspError::NoStreams => f.write_str("the camera offers no H.264, H.265 or AAC stream"),
            RtspError::Ended => f.write_str("the camera ended the stream"),
        }
    }
}

impl std::error::Error for RtspError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RtspError::Outbound(e) => Some(e),
            RtspError::Session(e) => Some(e),
            _ => None,
        }
    }
}

impl From<retina::Error> for RtspError {
    fn from(e: retina::Error) -> Self {
        RtspError::Session(e)
    }
}

/// Where and how to pull.
#[derive(Clone)]
pub struct Source {
    /// Without userinfo: credentials go in `creds`.
    pub url: Url,
    pub creds: Option<Credentials>,
    pub udp: bool,
    /// `security.outbound_allow`: the camera's address must be in it (`net::outbound`).
    pub outbound: Policy,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.url.as_str())
            .field("auth", &self.creds.is_some())
            .field("udp", &self.udp)
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

impl Source {
    /// `username`/`password` fields win over credentials in the URL's userinfo.
    pub fn new(
        rtsp_url: &str,
        username: Option<&str>,
        password: Option<&str>,
        transport: RtspTransport,
    ) -> Result<Source, SourceError> {
        let mut url = Url::parse(rtsp_url).map_err(SourceError::Url)?;
        if url.scheme() != "rtsp" {
            return Err(SourceError::Scheme(url.scheme().to_owned()));
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
            udp: transport == RtspTransport::Udp,
            outbound: None,
        })
    }

    /// The same source, restricted to `policy`'s destinations.
    pub fn with_outbound(mut self, policy: Policy) -> Source {
        self.outbound = policy;
        self
    }

    /// The URL to connect to. Under an allow list, the host is resolved here and the first
    /// permitted address written into the URL, so the connection goes to the address that
    /// was checked and not to whatever the name resolves to next. Without one, the URL as
    /// configured.
    pub async fn pinned_url(&self) -> Result<Url, RtspError> {
        let Some(policy) = &self.outbound else {
            return Ok(self.url.clone());
        };
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port().unwrap_or(RTSP_PORT);
        let addr = outbound::resolve(Some(policy), host, port)
            .await
            .map_err(RtspError::Outbound)?;
        let mut url = self.url.clone();
        url.set_ip_host(addr.ip()).map_err(|()| RtspError::Pin {
            url: self.shown().to_owned(),
            ip: addr.ip(),
        })?;
        Ok(url)
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
    /// The RTSP connection's socket (TCP transport, when it could be told apart), read in
    /// batches once [`Puller::batch`] was called (`net::gate`). Declared before `demuxed`
    /// is dropped: see `Drop`.
    gate: Option<RecvGate>,
    pace: Option<Pace>,
}

/// Reading in batches: the mark, and what the current wake-up has read so far.
struct Pace {
    low: LowWater,
    /// Items were read since the socket was last found dry.
    reading: bool,
    bytes: usize,
    /// Drops the mark to 1 when nothing came for `MAX_HOLD` (re-armed each wake-up).
    guard: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for Puller {
    /// The mark goes back to 1 before retina (dropped after this) tears the session down,
    /// so nothing it still reads waits for bytes that will not come.
    fn drop(&mut self) {
        if let (Some(p), Some(g)) = (&self.pace, &self.gate)
            && p.low.mark() > 1
        {
            let _ = g.set_mark(1);
        }
    }
}

/// DESCRIBE, SETUP every H.264/H.265/AAC stream, PLAY. The whole exchange is bounded by
/// `timeout`.
pub async fn connect(src: &Source, timeout: Duration) -> Result<Puller, RtspError> {
    match tokio::time::timeout(timeout, connect_inner(src)).await {
        Ok(r) => r,
        Err(_) => Err(RtspError::Timeout(timeout)),
    }
}

async fn connect_inner(src: &Source) -> Result<Puller, RtspError> {
    let opts = SessionOptions::default()
        .creds(src.creds.clone())
        .user_agent(format!("quoll/{}", env!("CARGO_PKG_VERSION")));
    // The RTSP connection is opened by DESCRIBE: the descriptors open before it tell
    // retina's socket apart afterwards (`net::gate`).
    let url = src.pinned_url().await?;
    let fds_before = (!src.udp).then(gate::open_fds);
    let mut session = Session::describe(url, opts).await?;
    let port = src.url.port().unwrap_or(RTSP_PORT);
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
        return Err(RtspError::NoStreams);
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
            .await?;
        map[i] = Some(kinds.len());
        kinds.push(kind);
        names.push(name);
    }
    let playing = session.play(PlayOptions::default()).await?;
    let demuxed = playing.demuxed()?;
    Ok(Puller {
        demuxed,
        has_video: kinds.iter().any(|k| k.is_video()),
        keyed: false,
        flush_point: false,
        gate,
        pace: None,
        mux: TsMuxer::new(&kinds),
        map,
        codecs: names.join("+"),
    })
}

impl Puller {
    /// Read the connection in batches from now on: about one frame interval of the
    /// stream per wake-up instead of one TCP segment (see `net::gate`). False when that
    /// cannot be done (UDP transport, socket not found): reads then follow the data.
    pub fn batch(&mut self) -> bool {
        if self.gate.is_some() && self.pace.is_none() {
            self.pace = Some(Pace {
                low: LowWater::new(),
                reading: false,
                bytes: 0,
                guard: Box::pin(tokio::time::sleep(MAX_HOLD)),
            });
        }
        self.pace.is_some()
    }

    /// One poll of retina's stream, keeping the batch accounts: a Pending after items is the
    /// end of a wake-up (retina read until `EAGAIN`), where the mark may move.
    fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<CodecItem, retina::Error>>> {
        let p = self.demuxed.poll_next_unpin(cx);
        let (Some(pace), Some(gate)) = (&mut self.pace, &self.gate) else {
            return p;
        };
        if p.is_ready() {
            pace.reading = true;
            return p;
        }
        let mut mark = None;
        if std::mem::take(&mut pace.reading) {
            let now = Instant::now();
            mark = pace.low.after_wake(now, std::mem::take(&mut pace.bytes));
            if pace.low.mark() > 1 {
                pace.guard.as_mut().reset((now + MAX_HOLD).into());
            }
        }
        if pace.low.mark() > 1 && pace.guard.as_mut().poll(cx).is_ready() {
            // Whatever is queued becomes readable at once: the reactor wakes us.
            mark = pace.low.quiet();
        }
        if let Some(m) = mark
            && let Err(e) = gate.set_mark(m)
        {
            // Cannot happen on an open socket; if it does, read as data comes, not stall.
            tracing::warn!("rtsp: SO_RCVLOWAT {m}: {e}");
            let _ = gate.set_mark(1);
            self.pace = None;
        }
        Poll::Pending
    }

    /// Waits for the next frame and appends its TS packets to `out` (possibly none, for
    /// items that are not frames). An error or the end of the stream ends the session.
    pub async fn next(&mut self, out: &mut Vec<u8>) -> Result<(), RtspError> {
        self.flush_point = !self.has_video;
        let item = std::future::poll_fn(|cx| self.poll_item(cx)).await;
        if let (Some(p), Some(Ok(i))) = (&mut self.pace, &item) {
            p.bytes += match i {
                CodecItem::VideoFrame(f) => f.data().len(),
                CodecItem::AudioFrame(f) => f.data().len(),
                _ => 0,
            };
        }
        match item {
            None => Err(RtspError::Ended),
            Some(Err(e)) => Err(RtspError::Session(e)),
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
        let s = Source::new(
            "rtsp://adm%40x:p%3Aw@cam:554/live",
            None,
            None,
            RtspTransport::Tcp,
        )
        .unwrap();
        assert_eq!(s.url.as_str(), "rtsp://cam:554/live");
        let c = s.creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("adm@x", "p:w"));
        let s = Source::new("rtsp://a:b@cam/x", Some("u"), Some("p"), RtspTransport::Udp).unwrap();
        let c = s.creds.clone().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        assert!(s.udp);
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "Debug shows no password"
        );
        assert!(
            Source::new("rtsp://cam/x", None, None, RtspTransport::Tcp)
                .unwrap()
                .creds
                .is_none()
        );
        let e = Source::new("http://cam/x", None, None, RtspTransport::Tcp).unwrap_err();
        assert_eq!(e, SourceError::Scheme("http".into()));
        assert_eq!(e.to_string(), "rtsp_url: scheme \"http\" is not rtsp");
        let e = Source::new("cam/x", None, None, RtspTransport::Tcp).unwrap_err();
        assert!(matches!(e, SourceError::Url(_)), "{e:?}");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}

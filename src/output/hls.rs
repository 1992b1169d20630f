//! HLS output: the shell around `crate::hls`. It reads the flow's ring into the segmenter,
//! keeps the last segments in memory for the API (`hls::Published`), and sends what the
//! upload queue asks for over one kept-alive HTTP/1.1 connection (TLS for `https`, verified
//! against the webpki roots), reconnecting when the ingest closes it.
//!
//! Events: "HLS segment upload failed: {error}" (warning) for the first failed PUT of a
//! failing run (the queue latches it), "HLS output failed: {error}" (critical) when the task
//! ends on an error it cannot retry (the ingest's address is outside
//! `security.outbound_allow`). Credentials go in an `Authorization` header and never into a
//! log line, an event or the API.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use super::OutputError;
use crate::config::HlsOutputConfig;
use crate::events::{Event, Events};
use crate::hls::segmenter::Segmenter;
use crate::hls::upload::{self, Next, Outcome, UploadQueue};
use crate::hls::{LiveWindow, PLAYLIST_NAME, Published, segment_name};
use crate::net::outbound::{OutboundError, Policy};
use crate::net::reconnect::Backoff;
use crate::stats::{OutputStats, bump};
use crate::ts::ring::{FlowRing, Read};

/// Connecting (TCP and TLS) to the ingest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request, from sending it to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answer bodies are read (so the connection can be kept) up to this much, then dropped.
const MAX_ANSWER: usize = 64 * 1024;
/// Retries: 500 ms doubling to 10 s, jittered so outputs of a fleet do not retry together.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What an HLS output is told (the config's `hls` output, once checked). `Debug` leaves
/// the secrets out (header values, the password, a password in the URL).
#[derive(Clone, PartialEq, Eq)]
pub struct HlsSettings {
    /// `http(s)://host[:port]/dir/` or `.../dir/name.m3u8`: segments go to `dir/`.
    pub ingest_url: String,
    pub segment_duration: Duration,
    pub playlist_size: usize,
    /// Extra request headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Basic auth; also taken from the URL's `user:pass@`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `EXT-X-PROGRAM-DATE-TIME` on every segment.
    pub program_date_time: bool,
}

impl std::fmt::Debug for HlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HlsSettings")
            .field(
                "ingest_url",
                &crate::config::strip_url_password(&self.ingest_url),
            )
            .field("segment_duration", &self.segment_duration)
            .field("playlist_size", &self.playlist_size)
            .field("headers", &headers)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("program_date_time", &self.program_date_time)
            .finish()
    }
}

impl HlsSettings {
    pub fn from_config(c: &HlsOutputConfig) -> Self {
        HlsSettings {
            ingest_url: c.ingest_url.clone(),
            segment_duration: Duration::from_millis(c.segment_duration_ms),
            playlist_size: c.playlist_size as usize,
            headers: c
                .headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            username: c.username.clone(),
            password: c.password.clone(),
            program_date_time: c.program_date_time,
        }
    }
}

/// Where requests go, from the ingest URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The directory path, ending in `/`.
    dir: String,
    playlist: String,
}

impl Target {
    fn parse(s: &str) -> Result<(Target, Option<(String, String)>), OutputError> {
        let bad = || OutputError::BadConfig {
            field: "ingest_url",
            value: crate::config::strip_url_password(s),
        };
        let url = url::Url::parse(s).map_err(|_| bad())?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad()),
        };
        let host = url.host_str().ok_or_else(bad)?.to_owned();
        let port = url.port_or_known_default().ok_or_else(bad)?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = url.path();
        let (dir, playlist) = match path.rsplit_once('/') {
            Some((dir, name)) if name.ends_with(".m3u8") => (format!("{dir}/"), name.to_owned()),
            _ if path.ends_with('/') => (path.to_owned(), PLAYLIST_NAME.to_owned()),
            _ => (format!("{path}/"), PLAYLIST_NAME.to_owned()),
        };
        let creds = (!url.username().is_empty())
            .then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
        let target = Target {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            dir,
            playlist,
        };
        Ok((target, creds))
    }
}

pub struct HlsOutput {
    settings: HlsSettings,
    target: Target,
    /// Request headers sent with every request (credentials included).
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<tokio_rustls::TlsConnector>,
    flow_id: String,
    output_id: String,
    events: Events,
    outbound: Policy,
    published: Published,
}

impl HlsOutput {
    /// Check the settings (nothing is connected before the first segment).
    pub fn bind(
        settings: &HlsSettings,
        flow_id: &str,
        output_id: &str,
        events: &Events,
        outbound: Policy,
        published: Published,
    ) -> Result<Self, OutputError> {
        let (target, url_creds) = Target::parse(&settings.ingest_url)?;
        let mut headers = Vec::with_capacity(settings.headers.len() + 1);
        for (name, value) in &settings.headers {
            let n =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| OutputError::BadConfig {
                    field: "headers",
                    value: name.clone(),
                })?;
            let mut v = HeaderValue::from_str(value).map_err(|_| OutputError::BadConfig {
                field: "headers",
                value: name.clone(),
            })?;
            v.set_sensitive(true);
            headers.push((n, v));
        }
        let creds = match (&settings.username, &settings.password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, _) => url_creds,
        };
        if let Some((user, pass)) = creds {
            let token = base64(format!("{user}:{pass}").as_bytes());
            let mut v = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                OutputError::BadConfig {
                    field: "username",
                    value: user.clone(),
                }
            })?;
            v.set_sensitive(true);
            headers.push((header::AUTHORIZATION, v));
        }
        let tls = if target.tls {
            rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
                OutputError::BadConfig {
                    field: "ingest_url",
                    value: target.host.clone(),
                }
            })?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(tls_config())))
        } else {
            None
        };
        Ok(HlsOutput {
            settings: settings.clone(),
            target,
            headers,
            tls,
            flow_id: flow_id.to_owned(),
            output_id: output_id.to_owned(),
            events: events.clone(),
            outbound,
            published,
        })
    }

    /// Segment the ring and upload until the task is dropped, or until an error that
    /// retrying cannot mend, which is raised as "HLS output failed".
    pub async fn run(self, ring: Rc<FlowRing>, stats: Rc<OutputStats>) {
        let (flow_id, output_id, events) = (
            self.flow_id.clone(),
            self.output_id.clone(),
            self.events.clone(),
        );
        if let Err(e) = self.run_inner(ring, stats).await {
            // Raising logs it (at error: the event is critical).
            events.raise(Event::hls_output_failed(
                &flow_id,
                &output_id,
                &e.to_string(),
            ));
        }
    }

    async fn run_inner(
        self,
        ring: Rc<FlowRing>,
        stats: Rc<OutputStats>,
    ) -> Result<(), OutboundError> {
        let s = &self.settings;
        // Numbered from the wall clock: a restarted output does not reuse the names (or the
        // media sequence numbers) of the segments a CDN may still cache from the last run.
        let first_seq = crate::time::unix_millis(SystemTime::now()) / 1000;
        let window = Rc::new(RefCell::new(LiveWindow::new(
            s.playlist_size,
            s.segment_duration,
            first_seq,
        )));
        let _published = self
            .published
            .publish(&self.flow_id, &self.output_id, window.clone());
        let backoff = Backoff::new(RETRY_MIN, RETRY_MAX).with_jitter(first_seq);
        let queue = RefCell::new(UploadQueue::new(
            s.playlist_size,
            crate::hls::playlist::Playlist::new(s.playlist_size, s.segment_duration, first_seq),
            self.target.playlist.clone(),
            backoff,
        ));
        let wake = Notify::new();
        let mut client = Client {
            out: &self,
            conn: None,
        };
        tokio::select! {
            () = read(&self, &ring, &stats, &window, &queue, &wake, first_seq) => Ok(()),
            r = upload(&mut client, &stats, &queue, &wake) => r,
        }
    }
}

/// Ring -> segmenter -> memory window and upload queue, forever.
async fn read(
    out: &HlsOutput,
    ring: &FlowRing,
    stats: &OutputStats,
    window: &RefCell<LiveWindow>,
    queue: &RefCell<UploadQueue>,
    wake: &Notify,
    first_seq: u64,
) {
    let mut segmenter = Segmenter::new(out.settings.segment_duration, first_seq);
    let mut reader = ring.ring.borrow().reader();
    let mut done = Vec::new();
    loop {
        let notified = ring.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let r = ring.ring.borrow();
            let now = Instant::now();
            loop {
                match r.read(&mut reader) {
                    Read::Empty => break,
                    Read::Lagged(missed) => bump(&stats.dropped, missed),
                    Read::Chunk(c) => {
                        bump(&stats.packets, c.packets() as u64);
                        segmenter.push(c.data, now, |s| done.push(s));
                    }
                }
            }
        }
        for seg in done.drain(..) {
            let name = segment_name(seg.seq);
            let data = Bytes::from(seg.data);
            let date_ms = out.settings.program_date_time.then(|| {
                crate::time::unix_millis(SystemTime::now())
                    .saturating_sub(seg.duration.as_millis() as u64)
            });
            window
                .borrow_mut()
                .push(name.clone(), data.clone(), seg.duration, date_ms);
            let mut q = queue.borrow_mut();
            let dropped = q.dropped();
            q.push_segment(name, data, seg.duration, date_ms);
            if q.dropped() > dropped {
                tracing::warn!(
                    flow_id = out.flow_id,
                    output_id = out.output_id,
                    dropped = q.dropped(),
                    "HLS upload queue full: oldest segment dropped"
                );
            }
            wake.notify_one();
        }
        notified.await;
    }
}

/// Send what the queue asks for, forever; `Err` only for what retrying cannot mend.
async fn upload(
    client: &mut Client<'_>,
    stats: &OutputStats,
    queue: &RefCell<UploadQueue>,
    wake: &Notify,
) -> Result<(), OutboundError> {
    let out = client.out;
    loop {
        let next = queue.borrow_mut().poll(Instant::now());
        match next {
            Next::Send(req) => {
                let outcome = client.send(&req).await?;
                let was_failing = queue.borrow().failing();
                let failed = queue.borrow_mut().finished(Instant::now(), outcome.clone());
                if was_failing && !queue.borrow().failing() {
                    tracing::info!(
                        flow_id = out.flow_id,
                        output_id = out.output_id,
                        "HLS uploads resumed"
                    );
                }
                match outcome {
                    Outcome::Status(200..=299) => {
                        bump(&stats.datagrams, 1);
                        bump(&stats.bytes, req.body.len() as u64);
                    }
                    _ if req.method == upload::Method::Delete => {}
                    _ => bump(&stats.send_errors, 1),
                }
                if failed.is_none() && !matches!(outcome, Outcome::Status(200..=299)) {
                    // The latched retries, and DELETEs: the event said it once.
                    tracing::debug!(
                        flow_id = out.flow_id,
                        output_id = out.output_id,
                        "HLS {} {} failed: {outcome:?}",
                        req.method.as_str(),
                        req.name
                    );
                }
                if let Some(error) = failed {
                    out.events.raise(Event::hls_upload_failed(
                        &out.flow_id,
                        &out.output_id,
                        &error,
                    ));
                }
            }
            Next::Wait(at) => tokio::time::sleep_until(at.into()).await,
            Next::Idle | Next::Busy => wake.notified().await,
        }
    }
}

/// One kept-alive HTTP/1.1 connection to the ingest.
struct Client<'o> {
    out: &'o HlsOutput,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client<'_> {
    /// Send `req`: the answer's status, or why there was none. `Err` only when the ingest
    /// may not be reached at all (`security.outbound_allow`).
    async fn send(&mut self, req: &upload::Request) -> Result<Outcome, OutboundError> {
        // A kept connection the ingest has closed meanwhile is replaced.
        let mut kept = self.conn.take();
        if let Some(c) = &mut kept
            && c.ready().await.is_err()
        {
            kept = None;
        }
        let mut conn = match kept {
            Some(c) => c,
            None => match self.connect().await {
                Ok(c) => c,
                Err(Connect::Refused(e)) => return Err(e),
                Err(Connect::Failed(e)) => return Ok(Outcome::Failed(e)),
            },
        };
        let t = &self.out.target;
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}{}", t.dir, req.name))
            .header(header::HOST, &t.authority)
            .header(
                header::USER_AGENT,
                concat!("quoll/", env!("CARGO_PKG_VERSION")),
            );
        if req.method == upload::Method::Put {
            builder = builder.header(header::CONTENT_TYPE, req.content_type);
        }
        for (n, v) in &self.out.headers {
            builder = builder.header(n, v);
        }
        let Ok(request) = builder.body(Full::new(req.body.clone())) else {
            return Ok(Outcome::Failed("cannot build the request".into()));
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = conn.send_request(request).await?;
            let status = resp.status().as_u16();
            // Read the answer so the connection can carry the next request.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            Ok::<u16, hyper::Error>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) => {
                self.conn = Some(conn);
                Ok(Outcome::Status(status))
            }
            Ok(Err(e)) => Ok(Outcome::Failed(e.to_string())),
            Err(_) => Ok(Outcome::Failed(format!(
                "no answer in {} s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, Connect> {
        let t = &self.out.target;
        let addr = crate::net::outbound::resolve(self.out.outbound.as_deref(), &t.host, t.port)
            .await
            .map_err(|e| match e {
                OutboundError::Refused { .. } if self.out.outbound.is_some() => Connect::Refused(e),
                e => Connect::Failed(e.to_string()),
            })?;
        let dial = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            match &self.out.tls {
                None => {
                    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::task::spawn_local(conn);
                    Ok(send)
                }
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                        .map_err(|e| e.to_string())?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", t.host))?;
                    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::task::spawn_local(conn);
                    Ok(send)
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(r) => r.map_err(Connect::Failed),
            Err(_) => Err(Connect::Failed(format!(
                "cannot connect to {addr}: timed out"
            ))),
        }
    }
}

enum Connect {
    Refused(OutboundError),
    Failed(String),
}

/// Public roots (`net::tls`), HTTP/1.1 by ALPN.
fn tls_config() -> rustls::ClientConfig {
    let mut config = crate::net::tls::client_config(&crate::net::tls::ServerTrust::WebPki)
        .expect("ring supports the default protocol versions and the webpki roots parse");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Percent-decoding of a URL's user or password (`%40` is `@`; `+` stays `+`).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    fn parts(t: &Target) -> (bool, u16, &str, &str, &str) {
        (t.tls, t.port, &t.dir, &t.playlist, &t.authority)
    }

    #[test]
    fn the_ingest_url_names_the_directory_and_the_playlist() {
        let (t, creds) = Target::parse("https://cdn.example/live/a/").unwrap();
        assert_eq!(
            parts(&t),
            (true, 443, "/live/a/", "index.m3u8", "cdn.example")
        );
        assert_eq!(creds, None);
        let (t, creds) = Target::parse("http://u:p%40s+s@127.0.0.1:8080/x/stream.m3u8").unwrap();
        assert_eq!(
            parts(&t),
            (false, 8080, "/x/", "stream.m3u8", "127.0.0.1:8080")
        );
        assert_eq!(creds, Some(("u".into(), "p@s+s".into())));
        let (t, _) = Target::parse("http://[::1]/x").unwrap();
        assert_eq!((t.host.as_str(), t.dir.as_str()), ("::1", "/x/"));
        for bad in ["ftp://h/x", "not a url", "http://"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        // Neither the error nor Debug shows a secret.
        let settings = HlsSettings {
            ingest_url: "https://u:urlpass@h/x/".into(),
            segment_duration: Duration::from_secs(2),
            playlist_size: 6,
            headers: vec![("X-Token".into(), "headerpass".into())],
            username: Some("u".into()),
            password: Some("pass".into()),
            program_date_time: false,
        };
        let shown = format!("{settings:?}");
        for secret in ["urlpass", "headerpass", "\"pass\""] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let e = Target::parse("ftp://u:secret@h/").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}

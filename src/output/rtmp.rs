//! RTMP/RTMPS push output: the shell around `rtmp::mux` (TS to FLV tags) and
//! `rtmp::publish` (the client side of a publish).
//!
//! One TCP connection (TLS for `rtmps://`, trusted by `net::tls`: the webpki roots, or the
//! `cert_fingerprint` pin for a private ingest with a self-signed certificate; never
//! unverified). Connecting, the TLS handshake and the RTMP publish together get
//! [`CONNECT_TIMEOUT`]; once publishing, the ring is read, muxed and written; a server that
//! stops reading for [`WRITE_TIMEOUT`] is dropped. Every drop or failed attempt goes back to
//! the shared [`Reconnect`] machine (1 s doubling to 30 s, jittered; a connection that
//! lasted 10 s starts the back-off afresh), and each new connection starts at a key frame
//! with fresh sequence headers and timestamps from 0.
//!
//! The seed has no RTMP-output events, so connection trouble is logged (the first failure
//! of a cycle and each drop at warning, silent retries at debug) and counted in the
//! output's `rtmp` stats; only a destination `security.outbound_allow` refuses, which no
//! retry mends, ends the output with "Output '{id}' failed to start on flow '{flow_id}':
//! {error}". The stream key never reaches a log line, an event or the API: the URL is
//! shown as `rtmp://host/app/***` and the server's words have the key blotted out.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::OutputError;
use crate::config::{RtmpOutputConfig, parse_fingerprint, redact_rtmp_url};
use crate::events::latch::LinkEvent;
use crate::events::{Event, Events};
use crate::net::outbound::{OutboundError, Policy};
use crate::net::reconnect::{Backoff, Next, Reconnect};
use crate::net::tls::ServerTrust;
use crate::rtmp::mux::{FlvMux, Notice};
use crate::rtmp::publish::Publisher;
use crate::rtmp::url::Endpoint;
use crate::stats::{OutputStats, RtmpOutputSnapshot, bump};
use crate::ts::ring::{FlowRing, Read};

/// TCP connect, TLS handshake and the RTMP conversation up to `NetStream.Publish.Start`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A server that takes none of our bytes for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long restarts the back-off from `reconnect_delay_secs`.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const READ_SIZE: usize = 16 * 1024;
/// A connection, TLS or not.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// How an attempt or a connection ended.
enum Failure {
    /// Try again after the back-off.
    Retry(String),
    /// The server's certificate did not verify (counted apart: a pin or a trust problem).
    Certificate(String),
    /// `security.outbound_allow` refuses the destination: no retry will mend it.
    Fatal(String),
}

pub struct RtmpOutput {
    ep: Endpoint,
    /// The URL with its key masked, for log lines and errors.
    shown: String,
    tls: Option<tokio_rustls::TlsConnector>,
    flow_id: String,
    output_id: String,
    events: Events,
    outbound: Policy,
    /// The first retry's wait, and the longest one.
    retry: (Duration, Duration),
    /// Give up after this many failed attempts in a row.
    max_attempts: Option<u32>,
}

impl RtmpOutput {
    /// Checks the URL and the trust settings; nothing is connected before `run`.
    pub fn bind(
        cfg: &RtmpOutputConfig,
        flow_id: &str,
        output_id: &str,
        events: &Events,
        outbound: Policy,
    ) -> Result<Self, OutputError> {
        let ep = Endpoint::parse(cfg.push_url(), cfg.stream_key.as_deref()).map_err(|_| {
            OutputError::BadConfig {
                field: "url",
                value: redact_rtmp_url(cfg.push_url()),
            }
        })?;
        let pins = match &cfg.cert_fingerprint {
            Some(fp) => vec![parse_fingerprint(fp).ok_or_else(|| OutputError::BadConfig {
                field: "cert_fingerprint",
                value: fp.clone(),
            })?],
            None => Vec::new(),
        };
        let tls = if ep.tls {
            rustls::pki_types::ServerName::try_from(bare(&ep.host).to_owned()).map_err(|_| {
                OutputError::BadConfig {
                    field: "url",
                    value: redact_rtmp_url(cfg.push_url()),
                }
            })?;
            let config = crate::net::tls::client_config(&ServerTrust::pins_or_webpki(pins, false))
                .map_err(|e| OutputError::BadConfig {
                    field: "url",
                    value: format!("{}: {e}", redact_rtmp_url(cfg.push_url())),
                })?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(RtmpOutput {
            ep,
            shown: redact_rtmp_url(cfg.push_url()),
            tls,
            flow_id: flow_id.to_owned(),
            output_id: output_id.to_owned(),
            events: events.clone(),
            outbound,
            retry: (
                Duration::from_secs(cfg.reconnect_delay_secs),
                Duration::from_secs(
                    cfg.reconnect_delay_secs
                        .max(RtmpOutputConfig::RETRY_MAX_SECS),
                ),
            ),
            max_attempts: cfg.max_reconnect_attempts,
        })
    }

    /// Connects, publishes and streams until the task is dropped, reconnecting on every
    /// failure but a refused destination.
    pub async fn run(self, ring: Rc<FlowRing>, stats: Rc<OutputStats>) {
        let (flow, out, shown) = (&self.flow_id, &self.output_id, &self.shown);
        let mut snap = RtmpOutputSnapshot::default();
        stats.rtmp.set(Some(snap));
        let seed = crate::time::unix_millis(SystemTime::now());
        let mut link = Reconnect::new(
            Backoff::new(self.retry.0, self.retry.1).with_jitter(seed),
            STABLE_AFTER,
            Instant::now(),
        );
        let mut mux = FlvMux::new();
        loop {
            // The machine is polled only between attempts and given no deadline (the
            // attempt's timeout is the shell's, below): it says dial now or wait.
            if let Next::Wait(until) = link.poll(Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let attempt = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Retry(format!(
                    "no publish within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))),
            };
            let (io, publisher) = match attempt {
                Ok(c) => c,
                Err(Failure::Fatal(e)) => {
                    self.events.raise(Event::output_start_failed(flow, out, &e));
                    return;
                }
                Err(f) => {
                    let msg = match f {
                        Failure::Certificate(m) => {
                            snap.certificate_errors += 1;
                            m
                        }
                        Failure::Retry(m) | Failure::Fatal(m) => m,
                    };
                    snap.failed_attempts += 1;
                    stats.rtmp.set(Some(snap));
                    let down = link.failed(Instant::now(), &msg);
                    if self
                        .max_attempts
                        .is_some_and(|max| link.failed_attempts() >= max)
                    {
                        let e = format!(
                            "{shown}: gave up after {} failed attempts in a row: {msg}",
                            link.failed_attempts()
                        );
                        self.events.raise(Event::output_start_failed(flow, out, &e));
                        return;
                    }
                    if down.event == Some(LinkEvent::Failed) {
                        tracing::warn!(flow_id = %flow, output_id = %out,
                            "RTMP push to {shown} failed: {msg} (retrying, quietly)");
                    } else {
                        tracing::debug!(flow_id = %flow, output_id = %out,
                            "RTMP push to {shown} failed again: {msg}");
                    }
                    continue;
                }
            };
            link.connected(Instant::now());
            tracing::info!(flow_id = %flow, output_id = %out, "RTMP publishing to {shown}");
            if snap.connects > 0 {
                snap.reconnects += 1;
            }
            snap.connects += 1;
            snap.connected = true;
            stats.rtmp.set(Some(snap));
            mux.restart();
            let why = self
                .stream(io, publisher, &ring, &stats, &mut mux, &mut snap)
                .await;
            snap.connected = false;
            stats.rtmp.set(Some(snap));
            let down = link.disconnected(Instant::now(), &why);
            if matches!(down.event, Some(LinkEvent::Lost { .. })) {
                tracing::warn!(flow_id = %flow, output_id = %out,
                    "RTMP push to {shown} lost: {why}; reconnecting in {:?}", down.delay);
            }
        }
    }

    /// TCP, TLS, handshake and publish: a connection ready for media.
    async fn connect(&self) -> Result<(Box<dyn Io>, Publisher), Failure> {
        let ep = &self.ep;
        let addr = crate::net::outbound::resolve(self.outbound.as_deref(), &ep.host, ep.port)
            .await
            .map_err(|e| match e {
                OutboundError::Refused { .. } if self.outbound.is_some() => {
                    Failure::Fatal(format!("{}: {e}", self.shown))
                }
                e => Failure::Retry(e.to_string()),
            })?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::Retry(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(bare(&ep.host).to_owned())
                    .map_err(|e| Failure::Fatal(e.to_string()))?;
                let s = tls.connect(name, tcp).await.map_err(|e| {
                    let certificate = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                    let msg = format!("TLS with {}: {e}", ep.host);
                    if certificate {
                        Failure::Certificate(msg)
                    } else {
                        Failure::Retry(msg)
                    }
                })?;
                Box::new(s)
            }
        };
        let epoch = crate::time::unix_millis(SystemTime::now()) as u32;
        let mut out = Vec::new();
        let mut p = Publisher::start(ep.target.clone(), epoch, &mut out);
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            if !out.is_empty() {
                io.write_all(&out)
                    .await
                    .map_err(|e| Failure::Retry(format!("write: {e}")))?;
                out.clear();
            }
            if p.publishing() {
                return Ok((io, p));
            }
            let n = io
                .read(&mut buf)
                .await
                .map_err(|e| Failure::Retry(format!("read: {e}")))?;
            if n == 0 {
                return Err(Failure::Retry(
                    "the server closed the connection before the publish started".into(),
                ));
            }
            p.feed(&buf[..n], &mut out)
                .map_err(|e| Failure::Retry(e.to_string()))?;
        }
    }

    /// Ring to server until the connection fails; returns why.
    async fn stream(
        &self,
        mut io: Box<dyn Io>,
        mut p: Publisher,
        ring: &FlowRing,
        stats: &OutputStats,
        mux: &mut FlvMux,
        snap: &mut RtmpOutputSnapshot,
    ) -> String {
        let (flow, out_id) = (&self.flow_id, &self.output_id);
        let mut reader = ring.ring.borrow().reader();
        let (mut tags, mut notices, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        let mut out = Vec::new();
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let notified = ring.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let r = ring.ring.borrow();
                loop {
                    match r.read(&mut reader) {
                        Read::Empty => break,
                        Read::Lagged(missed) => {
                            bump(&stats.dropped, missed);
                            mux.gap();
                        }
                        Read::Chunk(c) => {
                            bump(&stats.packets, c.packets() as u64);
                            mux.push(c.data, &mut tags, &mut notices, &mut dropped);
                        }
                    }
                }
            }
            for n in notices.drain(..) {
                snap.unsupported_streams += 1;
                match n {
                    Notice::Unsupported { pid, kind } => tracing::warn!(
                        flow_id = %flow, output_id = %out_id,
                        "RTMP output: {kind} stream on PID {pid} left out (only H.264 and AAC pass)"
                    ),
                    Notice::Extra { pid, kind } => tracing::warn!(
                        flow_id = %flow, output_id = %out_id,
                        "RTMP output: second {kind} stream on PID {pid} left out (FLV carries one of each)"
                    ),
                }
            }
            snap.dropped_frames += dropped.len() as u64;
            dropped.clear();
            for t in tags.drain(..) {
                p.media(t.type_id, t.timestamp, &t.body, &mut out);
                bump(&stats.datagrams, 1);
            }
            if !out.is_empty() {
                match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(&out)).await {
                    Ok(Ok(())) => bump(&stats.bytes, out.len() as u64),
                    Ok(Err(e)) => {
                        bump(&stats.send_errors, 1);
                        return format!("write: {e}");
                    }
                    Err(_) => {
                        bump(&stats.send_errors, 1);
                        return format!(
                            "the server took nothing for {} s",
                            WRITE_TIMEOUT.as_secs()
                        );
                    }
                }
                out.clear();
            }
            stats.rtmp.set(Some(*snap));
            tokio::select! {
                _ = &mut notified => {}
                r = io.read(&mut buf) => match r {
                    Ok(0) => return "the server closed the connection".into(),
                    Ok(n) => {
                        if let Err(e) = p.feed(&buf[..n], &mut out) {
                            return e.to_string();
                        }
                    }
                    Err(e) => return format!("read: {e}"),
                },
            }
        }
    }
}

/// `[::1]` -> `::1` (a TLS server name, a socket address).
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_show_the_url_with_its_key_masked() {
        for (url, shown) in [
            (
                "rtmp://a.rtmp.youtube.com/live2/abcd-efgh",
                "rtmp://a.rtmp.youtube.com/live2/***",
            ),
            (
                "rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s_bl=1&a=b",
                "rtmps://live-api-s.facebook.com:443/rtmp/***",
            ),
            ("rtmps://ingest.example/app/", "rtmps://ingest.example/app"),
        ] {
            assert_eq!(redact_rtmp_url(url), shown);
        }
    }

    #[test]
    fn bind_errors_show_the_url_with_its_key_masked() {
        let events = Events::in_memory(16);
        let cfg = |url: &str, fp: Option<&str>| RtmpOutputConfig {
            url: Some(url.into()),
            dest_url: None,
            stream_key: None,
            cert_fingerprint: fp.map(str::to_owned),
            reconnect_delay_secs: RtmpOutputConfig::DEFAULT_RECONNECT_DELAY_SECS,
            max_reconnect_attempts: None,
            extra: Default::default(),
        };
        let e = RtmpOutput::bind(&cfg("rtmp://h/app?sekrit", None), "f", "o", &events, None)
            .err()
            .unwrap();
        assert_eq!(e.to_string(), r#"url: "rtmp://h/app?***" is not valid"#);
        let e = RtmpOutput::bind(&cfg("rtmps://h/app/k", Some("zz")), "f", "o", &events, None)
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("cert_fingerprint"));
        assert!(RtmpOutput::bind(&cfg("rtmps://h/app/k", None), "f", "o", &events, None).is_ok());
    }
}

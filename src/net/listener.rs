//! Connection limits for every TCP listener: who is admitted, how accept errors are waited
//! out, and how long a connection may keep its descriptor without doing anything.
//!
//! Before this, the API listener accepted whatever came: 3 000 half-sent requests stayed
//! open for minutes, 20 000 used up every file descriptor, and then `/healthz`, `quoll ctl`
//! and RTSP inputs failed with EMFILE, while the accept loop logged a line per failure.
//!
//! The decisions are sans-IO, with time passed in: [`Admission`] (a cap on connections in
//! total and per source), [`AcceptBackoff`] (exponential, capped waits after accept errors,
//! logged once and then summarised), [`LogThrottle`] and [`IdleClock`]. [`Listener`] is the
//! thin IO shell a server loops on; it hands out connections whose [`Slot`] gives the place
//! back when the connection's last owner drops it (also after a WebSocket upgrade).
//!
//! One [`Admission`] may be shared by several listeners ([`SharedAdmission`]), so the total
//! stays under the descriptors the process can spare (`net::fdlimit`) however many TCP
//! listeners later servers (RTMP, WHIP) add. It and the idle clock sit behind `Arc<Mutex>`
//! although everything runs on one thread: hyper's upgrade hands the stream on as a `Send`
//! object, and the stream carries both (the locks are never contended).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::reconnect::Backoff;

/// The caps and timeouts of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, every source together.
    pub max_total: usize,
    /// Connections open at once from one source (an IPv4 address, an IPv6 /64).
    pub max_per_source: usize,
    /// A complete request header must arrive within this.
    pub header_timeout: Duration,
    /// No byte in either direction for this long closes the connection.
    pub idle_timeout: Duration,
}

// Built from the `server` block by `Limits::from_server` in `http/limits.rs`: the config
// is read above `net`, so `net` does not import `config` (which imports `net::outbound`).

/// The fewest connections a listener is given however short of descriptors the process
/// is: the operator must still reach the API.
pub const MIN_CONNECTIONS: usize = 16;

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_total` connections are open.
    Total,
    /// `max_per_source` connections from this source are open.
    PerSource,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerSource => "max_connections_per_ip",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Refuse(Refusal),
}

/// Counters of an [`Admission`], for `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdmissionStats {
    pub open: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub admitted: u64,
    pub refused_max_connections: u64,
    pub refused_max_connections_per_ip: u64,
    pub accept_errors: u64,
}

/// Who may connect: at most `max_total` connections, at most `max_per_source` of them from
/// one source.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_source: usize,
    open: usize,
    per_source: HashMap<IpAddr, usize>,
    stats: AdmissionStats,
}

/// The key a source is counted under. An IPv4 address is one host; an IPv4-mapped IPv6
/// address is that IPv4 host. An IPv6 host usually has a whole /64 to pick addresses from,
/// so per-address counting would not cap it: IPv6 sources are counted per /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        let max_total = limits.max_total.max(1);
        let max_per_source = limits.max_per_source.clamp(1, max_total);
        Admission {
            max_total,
            max_per_source,
            open: 0,
            per_source: HashMap::new(),
            stats: AdmissionStats {
                max_connections: max_total,
                max_connections_per_ip: max_per_source,
                ..AdmissionStats::default()
            },
        }
    }

    /// A connection from `ip` was accepted: keep it (and count it until [`on_close`]) or
    /// close it at once.
    ///
    /// [`on_close`]: Admission::on_close
    pub fn on_accept(&mut self, ip: IpAddr) -> Decision {
        if self.open >= self.max_total {
            self.stats.refused_max_connections += 1;
            return Decision::Refuse(Refusal::Total);
        }
        let n = self.per_source.entry(source_key(ip)).or_insert(0);
        if *n >= self.max_per_source {
            self.stats.refused_max_connections_per_ip += 1;
            return Decision::Refuse(Refusal::PerSource);
        }
        *n += 1;
        self.open += 1;
        self.stats.admitted += 1;
        Decision::Admit
    }

    /// An admitted connection from `ip` closed.
    pub fn on_close(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        if let Some(n) = self.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                // Sources come and go: the map holds only those with open connections.
                self.per_source.remove(&key);
            }
            self.open -= 1;
        }
    }

    pub fn on_accept_error(&mut self) {
        self.stats.accept_errors += 1;
    }

    pub fn open(&self) -> usize {
        self.open
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            open: self.open,
            ..self.stats
        }
    }
}

/// What to log about an event that may repeat thousands of times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// The first of a run: log it in full.
    First,
    /// A summary: this many more happened since the last line.
    Summary(u64),
    Quiet,
}

/// The first occurrence is logged, then at most one summary line per `every`.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    pub fn hit(&mut self, now: Instant) -> LogLine {
        match self.last {
            None => {
                self.last = Some(now);
                LogLine::First
            }
            Some(t) if now.duration_since(t) >= self.every => {
                let n = self.suppressed + 1;
                self.suppressed = 0;
                self.last = Some(now);
                LogLine::Summary(n)
            }
            Some(_) => {
                self.suppressed += 1;
                LogLine::Quiet
            }
        }
    }

    /// The run is over: how many went unlogged since the last line (a last summary when
    /// some did), and the next occurrence is a first again.
    pub fn end(&mut self) -> u64 {
        let n = self.suppressed;
        self.suppressed = 0;
        self.last = None;
        n
    }
}

/// Waits between accepts while `accept` fails (out of descriptors, out of memory): the
/// failure repeats at once otherwise, since the connection stays in the backlog, and the
/// loop would spin and log at full speed. The wait doubles from [`AcceptBackoff::MIN`] to
/// [`AcceptBackoff::MAX`] (the links' [`Backoff`], without jitter); one success resets it.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    delay: Backoff,
    /// Failures in the current run (since the last success).
    failures: u64,
    log: LogThrottle,
}

/// An accept error's handling: wait this long, and log this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub wait: Duration,
    pub log: LogLine,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl AcceptBackoff {
    pub const MIN: Duration = Duration::from_millis(5);
    /// Long enough that a flood costs nothing, short enough that the API answers again
    /// within a second of descriptors coming free.
    pub const MAX: Duration = Duration::from_secs(1);
    pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

    pub fn new() -> Self {
        AcceptBackoff {
            delay: Backoff::new(Self::MIN, Self::MAX),
            failures: 0,
            log: LogThrottle::new(Self::SUMMARY_EVERY),
        }
    }

    pub fn on_error(&mut self, now: Instant) -> Step {
        let wait = self.delay.next_delay();
        self.failures += 1;
        Step {
            wait,
            log: self.log.hit(now),
        }
    }

    /// An accept succeeded. `Some(n)`: a run of `n` failures just ended (worth a line).
    pub fn on_success(&mut self) -> Option<u64> {
        self.delay.reset();
        self.log.end();
        match std::mem::take(&mut self.failures) {
            0 => None,
            n => Some(n),
        }
    }
}

/// When a connection was last active and how long it may stay quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleClock {
    last: Instant,
    timeout: Duration,
}

impl IdleClock {
    pub fn new(now: Instant, timeout: Duration) -> Self {
        IdleClock { last: now, timeout }
    }

    pub fn touch(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    pub fn deadline(&self) -> Instant {
        self.last + self.timeout
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// An [`Admission`] shared by listeners and the connections they admitted.
pub type SharedAdmission = Arc<Mutex<Admission>>;

/// The lock, also after a panic elsewhere left it poisoned (the counts stay usable).
pub fn lock(a: &SharedAdmission) -> MutexGuard<'_, Admission> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// The activity clock shared by a connection's stream and its watchdog.
pub type SharedClock = Arc<Mutex<IdleClock>>;

fn clock(c: &SharedClock) -> IdleClock {
    *c.lock().unwrap_or_else(|p| p.into_inner())
}

/// An admitted connection's place; given back when dropped.
pub struct Slot {
    admission: SharedAdmission,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.admission).on_close(self.ip);
    }
}

/// A TCP listener with [`Limits`].
pub struct Listener {
    tcp: TcpListener,
    /// For logs: `api`, later `rtmp`, ...
    name: &'static str,
    limits: Limits,
    admission: SharedAdmission,
    backoff: AcceptBackoff,
    refusals: LogThrottle,
}

impl Listener {
    pub fn new(
        tcp: TcpListener,
        name: &'static str,
        limits: Limits,
        admission: SharedAdmission,
    ) -> Self {
        Listener {
            tcp,
            name,
            limits,
            admission,
            backoff: AcceptBackoff::new(),
            refusals: LogThrottle::new(AcceptBackoff::SUMMARY_EVERY),
        }
    }

    /// A listener with an admission of its own (nothing shared with other listeners).
    pub fn alone(tcp: TcpListener, name: &'static str, limits: Limits) -> Self {
        let admission = Arc::new(Mutex::new(Admission::new(&limits)));
        Self::new(tcp, name, limits, admission)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn admission(&self) -> SharedAdmission {
        self.admission.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next admitted connection. Accept errors are waited out (and logged sparingly),
    /// connections over a cap closed at once (and counted).
    pub async fn accept(&mut self) -> Conn {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(s) => s,
                Err(e) => {
                    lock(&self.admission).on_accept_error();
                    let step = self.backoff.on_error(Instant::now());
                    match step.log {
                        LogLine::First => tracing::warn!(
                            listener = self.name,
                            "accept failed: {e}; backing off (further failures are summarised)"
                        ),
                        LogLine::Summary(n) => tracing::warn!(
                            listener = self.name,
                            "accept failed {n} more times in the last minute: {e}"
                        ),
                        LogLine::Quiet => {}
                    }
                    tokio::time::sleep(step.wait).await;
                    continue;
                }
            };
            if let Some(n) = self.backoff.on_success() {
                tracing::info!(listener = self.name, "accepting again after {n} failures");
            }
            let decision = lock(&self.admission).on_accept(peer.ip());
            match decision {
                Decision::Admit => {
                    let slot = Slot {
                        admission: self.admission.clone(),
                        ip: peer.ip(),
                    };
                    return Conn::new(stream, peer, slot, self.limits.idle_timeout);
                }
                Decision::Refuse(why) => {
                    // RST at once: no FIN handshake to wait for, no TIME_WAIT kept here.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                    match self.refusals.hit(Instant::now()) {
                        LogLine::First => tracing::warn!(
                            listener = self.name, %peer, reason = why.code(),
                            "connection refused: over server.{} (further refusals are summarised)",
                            why.code()
                        ),
                        LogLine::Summary(n) => tracing::warn!(
                            listener = self.name,
                            "{n} more connections refused over the connection caps in the last minute"
                        ),
                        LogLine::Quiet => {}
                    }
                }
            }
        }
    }
}

/// An admitted connection: the stream, with its [`Slot`] and its activity clock.
pub struct Conn {
    pub peer: SocketAddr,
    pub stream: Tracked,
    pub idle: SharedClock,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, slot: Slot, idle_timeout: Duration) -> Conn {
        let idle = Arc::new(Mutex::new(IdleClock::new(Instant::now(), idle_timeout)));
        Conn {
            peer,
            stream: Tracked {
                stream,
                idle: idle.clone(),
                _slot: slot,
            },
            idle,
        }
    }
}

/// Run `serve` (the connection's protocol) until it ends or the connection has been quiet
/// for its idle timeout, whichever is first. `Err(())` is the timeout; dropping `serve`
/// closes the connection.
pub async fn until_idle<F: std::future::Future>(
    idle: SharedClock,
    serve: F,
) -> Result<F::Output, ()> {
    let watchdog = async {
        loop {
            let deadline = clock(&idle).deadline();
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
            if clock(&idle).expired(Instant::now()) {
                return;
            }
        }
    };
    tokio::select! {
        out = serve => Ok(out),
        () = watchdog => Err(()),
    }
}

/// A TCP stream that notes each byte moved in its [`IdleClock`] and holds the connection's
/// [`Slot`], so the place is given back when the stream is dropped by whoever owns it last
/// (hyper, or the WebSocket session it was upgraded to).
pub struct Tracked {
    stream: TcpStream,
    idle: SharedClock,
    _slot: Slot,
}

impl Tracked {
    fn touch(&self) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .touch(Instant::now());
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_total: total,
            max_per_source: per,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admits_up_to_the_per_source_cap_then_refuses_that_source_only() {
        let mut a = Admission::new(&limits(10, 2));
        let x = ip("192.0.2.1");
        assert_eq!(a.on_accept(x), Decision::Admit);
        assert_eq!(a.on_accept(x), Decision::Admit);
        assert_eq!(a.on_accept(x), Decision::Refuse(Refusal::PerSource));
        assert_eq!(a.on_accept(ip("192.0.2.2")), Decision::Admit);
        assert_eq!(a.open(), 3);
        a.on_close(x);
        assert_eq!(
            a.on_accept(x),
            Decision::Admit,
            "a closed place is free again"
        );
        let s = a.stats();
        assert_eq!(
            (s.open, s.admitted, s.refused_max_connections_per_ip),
            (3, 4, 1)
        );
    }

    #[test]
    fn the_total_cap_holds_across_sources_and_frees_on_close() {
        let mut a = Admission::new(&limits(3, 3));
        for i in 1..=3 {
            assert_eq!(a.on_accept(ip(&format!("198.51.100.{i}"))), Decision::Admit);
        }
        assert_eq!(
            a.on_accept(ip("198.51.100.9")),
            Decision::Refuse(Refusal::Total)
        );
        a.on_close(ip("198.51.100.2"));
        assert_eq!(a.on_accept(ip("198.51.100.9")), Decision::Admit);
        assert_eq!(a.stats().refused_max_connections, 1);
        // Closing what was never admitted changes nothing (a refused connection).
        a.on_close(ip("203.0.113.7"));
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let mut a = Admission::new(&limits(10, 2));
        assert_eq!(a.on_accept(ip("2001:db8:1:2::1")), Decision::Admit);
        assert_eq!(a.on_accept(ip("2001:db8:1:2:ffff::9")), Decision::Admit);
        assert_eq!(
            a.on_accept(ip("2001:db8:1:2:abcd::1")),
            Decision::Refuse(Refusal::PerSource),
            "another address of the same /64 is the same source"
        );
        assert_eq!(a.on_accept(ip("2001:db8:1:3::1")), Decision::Admit);
        assert_eq!(a.on_accept(ip("::ffff:192.0.2.1")), Decision::Admit);
        assert_eq!(a.on_accept(ip("192.0.2.1")), Decision::Admit);
        assert_eq!(
            a.on_accept(ip("192.0.2.1")),
            Decision::Refuse(Refusal::PerSource)
        );
        a.on_close(ip("::ffff:192.0.2.1"));
        assert_eq!(a.on_accept(ip("192.0.2.1")), Decision::Admit);
    }

    #[test]
    fn the_map_forgets_sources_without_connections() {
        let mut a = Admission::new(&limits(100_000, 1));
        for i in 0..1000u32 {
            let x = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000u32 + i));
            assert_eq!(a.on_accept(x), Decision::Admit);
            a.on_close(x);
        }
        assert!(a.per_source.is_empty());
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::new();
        let waits: Vec<Duration> = (0..10)
            .map(|i| b.on_error(t0 + Duration::from_millis(i)).wait)
            .collect();
        assert_eq!(waits[0], AcceptBackoff::MIN);
        assert_eq!(waits[1], AcceptBackoff::MIN * 2);
        assert_eq!(waits[2], AcceptBackoff::MIN * 4);
        assert_eq!(*waits.last().unwrap(), AcceptBackoff::MAX);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(b.on_success(), Some(10));
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_error(t0).wait, AcceptBackoff::MIN);
    }

    #[test]
    fn accept_errors_log_the_first_then_one_summary_a_minute() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::new();
        assert_eq!(b.on_error(t0).log, LogLine::First);
        for s in 1..60 {
            assert_eq!(b.on_error(t0 + Duration::from_secs(s)).log, LogLine::Quiet);
        }
        assert_eq!(
            b.on_error(t0 + Duration::from_secs(60)).log,
            LogLine::Summary(60)
        );
        assert_eq!(b.on_error(t0 + Duration::from_secs(61)).log, LogLine::Quiet);
        b.on_success();
        assert_eq!(
            b.on_error(t0 + Duration::from_secs(62)).log,
            LogLine::First,
            "a new run is logged again"
        );
    }

    #[test]
    fn the_idle_clock_moves_only_forward() {
        let t0 = Instant::now();
        let mut c = IdleClock::new(t0, Duration::from_secs(30));
        assert!(!c.expired(t0 + Duration::from_secs(29)));
        assert!(c.expired(t0 + Duration::from_secs(30)));
        c.touch(t0 + Duration::from_secs(20));
        assert_eq!(c.deadline(), t0 + Duration::from_secs(50));
        c.touch(t0 + Duration::from_secs(5));
        assert_eq!(c.deadline(), t0 + Duration::from_secs(50));
    }

    #[test]
    fn refusal_codes_name_the_config_field() {
        assert_eq!(Refusal::Total.code(), "max_connections");
        assert_eq!(Refusal::PerSource.code(), "max_connections_per_ip");
    }
}

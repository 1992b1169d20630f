//! The manager link's state machine, sans-IO.
//!
//! `Link` owns every decision of the connection's life (when to connect and to which URL,
//! when to give up on a connect or an auth reply, when to ping and when a missing pong means
//! the link is dead, when health and stats are due, how long to back off, which events to
//! raise) and none of the I/O. The async shell in `client.rs` feeds it inputs with the current
//! time (`handle_*(now, …)`), performs what [`Link::poll_action`] returns, and sleeps until
//! [`Link::poll_timeout`]. It never reads a clock, so the tests below drive it on fake time.
//!
//! What every reconnecting link shares (when the next attempt is due, the back-off and its
//! restart after a session that lasted `stable_after`, the connect and auth deadlines, the
//! latching of the connection events) is a [`Reconnect`] machine inside the link, the one the
//! SRT and RTSP inputs and outputs use. The link keeps what is the manager's own: the URL
//! rotation, the authentication step and its longer back-off (the shared [`Backoff`] type),
//! the session's pings, health and stats.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::protocol::{self, Credentials, Incoming};
use crate::events::Event;
use crate::events::latch::LinkEvent;
use crate::net::reconnect::{Backoff, Down, Next, Reconnect};
use crate::secret::Secret;

/// Every duration the link uses.
#[derive(Debug, Clone)]
pub struct Timing {
    /// TCP + TLS + WebSocket upgrade.
    pub connect_timeout: Duration,
    /// From sending `auth` to the manager's answer.
    pub auth_timeout: Duration,
    /// A WebSocket Ping is sent this long after the previous one was answered.
    pub ping_interval: Duration,
    /// A Ping not answered within this is a dead link.
    pub pong_timeout: Duration,
    pub health_interval: Duration,
    pub stats_interval: Duration,
    /// Reconnect backoff: first delay, cap.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A session that stayed up this long resets the backoff.
    pub stable_after: Duration,
    /// Backoff after a failed authentication: `auth_error`, or `auth` sent and no `auth_ok`
    /// (the manager closed, or never answered). The manager locks a node out after 5
    /// failures in 60 s; a first delay of 40 s (30 s after the worst jitter) keeps the edge
    /// at 2 tries a minute.
    pub auth_backoff_min: Duration,
    pub auth_backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timing {
            connect_timeout: s(10),
            auth_timeout: s(10),
            ping_interval: s(10),
            pong_timeout: s(10),
            health_interval: s(15),
            stats_interval: s(1),
            backoff_min: s(1),
            backoff_max: s(60),
            stable_after: s(60),
            auth_backoff_min: s(40),
            auth_backoff_max: s(600),
        }
    }
}

/// What the shell must do. `Debug` shows no secret: the node secret and the config objects
/// of a command's action are held as [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a connection to `urls[url]`.
    Connect {
        url: usize,
    },
    /// Drop the current connection (idempotent: there may be none).
    Disconnect {
        reason: String,
    },
    /// Send the `auth` frame built from [`Link::credentials`].
    SendAuth,
    /// Authenticated: start the writer's event delivery.
    Up,
    SendHealth,
    SendStats,
    /// A WebSocket Ping frame.
    SendPing,
    /// The application-level `pong` answering the manager's `ping`.
    SendPong,
    /// Run a command and send its reply.
    Execute {
        command_id: String,
        action: protocol::Action,
    },
    /// Answer a command that could not be read.
    Reject {
        command_id: String,
        error: String,
    },
    /// `register_ack`: persist these atomically and forget the token.
    StoreCredentials {
        node_id: String,
        node_secret: Secret,
    },
    Raise(Event),
}

/// Counters for health and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connection attempts.
    pub connects: u64,
    /// Sessions that reached `auth_ok`.
    pub sessions: u64,
    pub failed_attempts: u64,
    pub auth_failures: u64,
    /// Frames that were not JSON, not an object, or lacked a field the edge needs.
    pub malformed: u64,
    /// Frames over [`protocol::MAX_MESSAGE_BYTES`] (ignored), and frames too large to read
    /// at all (the connection closed, see [`Link::handle_frame_too_large`]).
    pub oversize: u64,
    /// Well-formed messages of a type the edge does not handle.
    pub ignored: u64,
}

/// The link's phase. When to connect, the connect and auth deadlines, the back-off and the
/// latching of the connection events are the [`Reconnect`] machine's; this adds what only
/// the manager has (the auth step, and the session's timers).
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Backing off.
    Waiting,
    Connecting,
    Authenticating,
    Up(Session),
}

#[derive(Debug, Clone, PartialEq)]
struct Session {
    next_ping: Instant,
    pong_due: Option<Instant>,
    next_health: Instant,
    next_stats: Instant,
}

pub struct Link {
    timing: Timing,
    urls: usize,
    url: usize,
    credentials: Credentials,
    state: State,
    /// Dialing, back-off, deadlines and the latching of the connection events.
    reconnect: Reconnect,
    /// The wait after a failed authentication: the link's own decision, with the shared
    /// back-off type (see [`Timing::auth_backoff_min`]).
    auth_backoff: Backoff,
    /// Auth failures are latched like the cycle: one event until auth succeeds again.
    auth_failure_reported: bool,
    actions: VecDeque<Action>,
    counters: Counters,
}

impl Link {
    /// A link over `urls` URLs (at least one), connecting at once. `seed` feeds the jitter.
    pub fn new(
        urls: usize,
        credentials: Credentials,
        timing: Timing,
        seed: u64,
        now: Instant,
    ) -> Self {
        Link {
            urls: urls.max(1),
            url: 0,
            credentials,
            state: State::Waiting,
            reconnect: Reconnect::new(
                Backoff::new(timing.backoff_min, timing.backoff_max).with_jitter(seed),
                timing.stable_after,
                now,
            )
            .with_connect_timeout(timing.connect_timeout),
            auth_backoff: Backoff::new(timing.auth_backoff_min, timing.auth_backoff_max)
                .with_jitter(seed.rotate_left(17)),
            timing,
            auth_failure_reported: false,
            actions: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The link's state in one word, for `quoll ctl manager`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Waiting => "waiting to reconnect",
            State::Connecting => "connecting",
            State::Authenticating => "authenticating",
            State::Up(_) => "connected",
        }
    }

    /// Whether a session with the manager was ever established. A node that never reached
    /// its manager says so in `/healthz` and `quoll ctl manager`, not as a "lost" event.
    pub fn ever_connected(&self) -> bool {
        self.counters.sessions > 0
    }

    /// Why the last attempt or session ended, for `quoll ctl manager` and `/healthz`.
    pub fn last_error(&self) -> Option<&str> {
        self.reconnect.last_error()
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// The URL index of the current or next attempt.
    pub fn url(&self) -> usize {
        self.url
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Link::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        match (&self.state, self.reconnect.poll_timeout()) {
            (State::Up(s), _) => {
                let ping = s.pong_due.unwrap_or(s.next_ping);
                ping.min(s.next_health).min(s.next_stats)
            }
            // The next attempt, or the connect or auth deadline.
            (_, Some(t)) => t,
            // Not reached: down, the machine always has a deadline (every attempt has
            // `connect_timeout`, then `auth_timeout`).
            (_, None) => self.reconnect.since() + self.timing.connect_timeout,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Waiting => {
                if self.reconnect.poll(now) == Next::Connect {
                    self.state = State::Connecting;
                    self.counters.connects += 1;
                    self.actions.push_back(Action::Connect { url: self.url });
                }
            }
            State::Connecting => {
                if self.reconnect.poll(now) == Next::TimedOut {
                    self.attempt_failed(now, "connect timed out");
                }
            }
            State::Authenticating => {
                if self.reconnect.poll(now) == Next::TimedOut {
                    self.attempt_failed(now, "no answer to auth");
                }
            }
            State::Up(s) => {
                if s.pong_due.is_some_and(|due| now >= due) {
                    self.lost(now, "no pong within the deadline");
                    return;
                }
                if s.pong_due.is_none() && now >= s.next_ping {
                    s.pong_due = Some(now + self.timing.pong_timeout);
                    self.actions.push_back(Action::SendPing);
                }
                if now >= s.next_health {
                    s.next_health = next_tick(s.next_health, self.timing.health_interval, now);
                    self.actions.push_back(Action::SendHealth);
                }
                if now >= s.next_stats {
                    s.next_stats = next_tick(s.next_stats, self.timing.stats_interval, now);
                    self.actions.push_back(Action::SendStats);
                }
            }
        }
    }

    /// The WebSocket upgrade completed.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state == State::Connecting {
            self.state = State::Authenticating;
            self.reconnect.step_deadline(now, self.timing.auth_timeout);
            self.actions.push_back(Action::SendAuth);
        }
    }

    /// The connection attempt failed (DNS, TCP, TLS, upgrade).
    pub fn handle_connect_failed(&mut self, now: Instant, error: &str) {
        if self.state == State::Connecting {
            self.attempt_failed(now, error);
        }
    }

    /// The connection closed or a read/write failed.
    pub fn handle_closed(&mut self, now: Instant, reason: &str) {
        match self.state {
            State::Up(_) => self.lost(now, reason),
            State::Connecting | State::Authenticating => self.attempt_failed(now, reason),
            // Already handled (the link itself decided to disconnect).
            State::Waiting => {}
        }
    }

    /// The manager sent a frame over the shell's read limit. The WebSocket reader cannot
    /// skip a frame it refused to buffer (its payload is still in the stream), so the
    /// connection is closed; the frame is counted, and the link reconnects as after any
    /// other loss (normal backoff once the session was up).
    pub fn handle_frame_too_large(&mut self, now: Instant, error: &str) {
        self.counters.oversize += 1;
        tracing::warn!(
            "closing the manager connection: it sent a frame too large to read ({error}); \
             reconnecting"
        );
        self.handle_closed(now, &format!("frame too large from the manager ({error})"));
    }

    /// A WebSocket Pong arrived.
    pub fn handle_pong(&mut self, now: Instant) {
        if let State::Up(s) = &mut self.state
            && s.pong_due.take().is_some()
        {
            s.next_ping = now + self.timing.ping_interval;
        }
    }

    /// A binary frame: the protocol has none; ignored and counted.
    pub fn handle_binary(&mut self, len: usize) {
        if len > protocol::MAX_MESSAGE_BYTES {
            self.counters.oversize += 1;
        } else {
            self.counters.malformed += 1;
        }
    }

    /// A text frame from the manager. Garbage is ignored and counted, never fatal.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if text.len() > protocol::MAX_MESSAGE_BYTES {
            self.counters.oversize += 1;
            tracing::warn!(bytes = text.len(), "ignored an oversize manager message");
            return;
        }
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.counters.malformed += 1;
                tracing::warn!("ignored a malformed manager message: {e}");
                return;
            }
        };
        match (&self.state, msg) {
            (State::Authenticating, Incoming::AuthOk) => self.up(now),
            (
                State::Authenticating,
                Incoming::RegisterAck {
                    node_id,
                    node_secret,
                },
            ) => {
                self.credentials = Credentials::Node {
                    id: node_id.clone(),
                    secret: node_secret.clone(),
                };
                self.actions.push_back(Action::StoreCredentials {
                    node_id,
                    node_secret,
                });
                self.up(now);
            }
            (State::Authenticating, Incoming::AuthError { message }) => {
                self.auth_failed(now, &message)
            }
            (State::Up(_), Incoming::Command { command_id, action }) => {
                self.actions
                    .push_back(Action::Execute { command_id, action });
            }
            (State::Up(_), Incoming::BadCommand { command_id, error }) => {
                self.counters.malformed += 1;
                self.actions.push_back(Action::Reject { command_id, error });
            }
            (State::Up(_), Incoming::Ping) => self.actions.push_back(Action::SendPong),
            (_, Incoming::Other(kind)) => {
                self.counters.ignored += 1;
                tracing::debug!(%kind, "ignored a manager message of unknown type");
            }
            (_, other) => {
                self.counters.ignored += 1;
                // The type only: a late register_ack holds the node secret, a command may
                // hold passphrases.
                tracing::debug!(
                    kind = other.kind(),
                    state = self.state_name(),
                    "ignored a manager message out of place"
                );
            }
        }
    }

    fn up(&mut self, now: Instant) {
        let t = &self.timing;
        self.state = State::Up(Session {
            next_ping: now + t.ping_interval,
            pong_due: None,
            next_health: now + t.health_interval,
            next_stats: now + t.stats_interval,
        });
        self.auth_failure_reported = false;
        self.auth_backoff.reset();
        self.counters.sessions += 1;
        if let Some(LinkEvent::Connected {
            failed_attempts, ..
        }) = self.reconnect.connected(now)
        {
            self.actions.push_back(Action::Raise(
                Event::manager_connected()
                    .with_detail("url_index", self.url)
                    .with_detail("failed_attempts", failed_attempts),
            ));
        }
        // Health right after auth, queued before event delivery is switched on, so it is
        // the first message of the session; then the event backlog.
        self.actions.push_back(Action::SendHealth);
        self.actions.push_back(Action::Up);
    }

    /// A connect or auth attempt failed before the link was up.
    ///
    /// Once `auth` went out, any failure short of `auth_ok` (the manager closed without
    /// `auth_error`, or never answered) may count as a failed authentication on the manager's
    /// side, so the wait is the auth backoff, which stays clear of its lockout; before that
    /// (DNS, TCP, TLS, upgrade) the manager saw no credentials and the normal backoff applies.
    fn attempt_failed(&mut self, now: Instant, reason: &str) {
        let auth_sent = self.state == State::Authenticating;
        self.counters.failed_attempts += 1;
        self.actions.push_back(Action::Disconnect {
            reason: reason.to_string(),
        });
        // Try the next URL.
        self.url = (self.url + 1) % self.urls;
        // The machine's event (a first failure) is not raised: the catalog has no
        // "connection failed" for the manager, and "lost, reconnecting" would claim a link
        // that never was. A node that never reached its manager shows it in `/healthz` and
        // `ctl manager`; after a loss the machine has already reported the cycle.
        let down = if auth_sent {
            let delay = self.auth_backoff.next_delay();
            self.reconnect.failed_with_delay(now, reason, delay)
        } else {
            self.reconnect.failed(now, reason)
        };
        self.wait(down, reason);
    }

    fn auth_failed(&mut self, now: Instant, reason: &str) {
        let why = format!("auth_error: {reason}");
        self.counters.failed_attempts += 1;
        self.counters.auth_failures += 1;
        self.actions.push_back(Action::Disconnect {
            reason: why.clone(),
        });
        // A failed attempt for the machine, but the auth event is the report.
        if !self.auth_failure_reported {
            self.auth_failure_reported = true;
            self.actions
                .push_back(Action::Raise(Event::manager_auth_failed(reason)));
        }
        let delay = self.auth_backoff.next_delay();
        let down = self.reconnect.failed_with_delay(now, &why, delay);
        self.wait(down, reason);
    }

    /// An established session dropped.
    fn lost(&mut self, now: Instant, reason: &str) {
        if !matches!(self.state, State::Up(_)) {
            return;
        }
        self.actions.push_back(Action::Disconnect {
            reason: reason.to_string(),
        });
        // A session that lasted `stable_after` starts the back-off afresh (the machine's rule).
        let down = self.reconnect.disconnected(now, reason);
        if let Some(LinkEvent::Lost { .. }) = down.event {
            self.actions.push_back(Action::Raise(
                Event::manager_connection_lost().with_detail("reason", reason),
            ));
        }
        self.wait(down, reason);
    }

    fn wait(&mut self, down: Down, reason: &str) {
        tracing::info!(
            "manager link down ({reason}); next attempt in {:.1} s",
            down.delay.as_secs_f64()
        );
        self.state = State::Waiting;
    }
}

/// The next periodic deadline after `now`, on the original grid when only slightly late, so
/// a busy moment does not make stats drift; from `now` after a long stall.
fn next_tick(prev: Instant, interval: Duration, now: Instant) -> Instant {
    let next = prev + interval;
    if next > now { next } else { now + interval }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Category, Severity};
    use crate::testing::capture_logs;

    const SEC: Duration = Duration::from_secs(1);

    struct Fixture {
        link: Link,
        now: Instant,
    }

    impl Fixture {
        fn new(urls: usize, creds: Credentials) -> Self {
            let now = Instant::now();
            Fixture {
                link: Link::new(urls, creds, Timing::default(), 42, now),
                now,
            }
        }
        fn token() -> Self {
            Self::new(
                2,
                Credentials::Token {
                    token: "tok".into(),
                },
            )
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
        /// Run timers up to `now` and drain the actions.
        fn tick(&mut self) -> Vec<Action> {
            self.link.handle_timeout(self.now);
            self.drain()
        }
        fn drain(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.link.poll_action()).collect()
        }
        /// Jump to the next deadline and run it.
        fn next(&mut self) -> Vec<Action> {
            self.now = self.now.max(self.link.poll_timeout());
            self.tick()
        }
        fn connect_and_auth(&mut self) -> Vec<Action> {
            let a = self.next();
            assert!(matches!(a[..], [Action::Connect { .. }]), "{a:?}");
            self.link.handle_connected(self.now);
            assert_eq!(self.drain(), [Action::SendAuth]);
            self.link
                .handle_text(self.now, r#"{"type":"auth_ok","timestamp":"x"}"#);
            self.drain()
        }
        /// The link drops (EOF) now; returns when, for measuring the backoff that follows.
        fn lose_link(&mut self) -> Instant {
            self.link.handle_closed(self.now, "eof");
            self.drain();
            self.now
        }
    }

    fn raised(actions: &[Action]) -> Vec<(Severity, Category, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Raise(e) => Some((e.severity, e.category, e.message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connects_authenticates_then_sends_health_and_stats_on_time() {
        let mut f = Fixture::token();
        let a = f.connect_and_auth();
        assert_eq!(
            raised(&a),
            [(
                Severity::Info,
                Category::Manager,
                "Connected to manager".into()
            )]
        );
        assert_eq!(a[1..], [Action::SendHealth, Action::Up]);
        // Stats every second; health every 15.
        let mut stats = 0;
        let mut health = 0;
        let start = f.now;
        while f.now < start + 15 * SEC {
            for a in f.next() {
                match a {
                    Action::SendStats => stats += 1,
                    Action::SendHealth => health += 1,
                    Action::SendPing => f.link.handle_pong(f.now),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!((stats, health), (15, 1));
    }

    #[test]
    fn register_ack_switches_to_the_issued_credentials() {
        let mut f = Fixture::token();
        f.next();
        f.link.handle_connected(f.now);
        f.drain();
        f.link.handle_text(
            f.now,
            r#"{"type":"register_ack","timestamp":"x","payload":{"node_id":"n1","node_secret":"s1"}}"#,
        );
        let a = f.drain();
        assert_eq!(
            a[0],
            Action::StoreCredentials {
                node_id: "n1".into(),
                node_secret: "s1".into()
            }
        );
        assert!(f.link.is_up());
        assert_eq!(
            f.link.credentials(),
            &Credentials::Node {
                id: "n1".into(),
                secret: "s1".into()
            }
        );
    }

    #[test]
    fn missing_pong_is_a_dead_link_and_reconnects_with_backoff() {
        let mut f = Fixture::token();
        f.connect_and_auth();
        // Ignore stats/health; never answer the ping.
        let t0 = f.now;
        let mut ping_at = None;
        let lost = loop {
            let a = f.next();
            if a.contains(&Action::SendPing) {
                ping_at = Some(f.now);
            }
            if let Some(d) = a.iter().find(|a| matches!(a, Action::Disconnect { .. })) {
                break (f.now, d.clone(), a);
            }
            assert!(f.now < t0 + 60 * SEC);
        };
        assert_eq!(ping_at, Some(t0 + 10 * SEC));
        assert_eq!(lost.0, t0 + 20 * SEC);
        assert_eq!(
            raised(&lost.2),
            [(
                Severity::Warning,
                Category::Manager,
                "Manager connection lost, reconnecting".into()
            )]
        );
        // Next attempt within the first backoff step: 0.75..=1 s.
        let before = f.now;
        let a = f.next();
        assert!(matches!(a[..], [Action::Connect { .. }]));
        let d = f.now - before;
        assert!(d >= SEC * 3 / 4 && d <= SEC, "{d:?}");
    }

    #[test]
    fn backoff_doubles_to_sixty_seconds_rotates_urls_and_raises_nothing_before_a_session() {
        let mut f = Fixture::token();
        let mut delays = Vec::new();
        let mut urls = Vec::new();
        let mut events = Vec::new();
        for _ in 0..10 {
            let t = f.now;
            let a = f.next();
            let Action::Connect { url } = a[0] else {
                panic!("{a:?}")
            };
            urls.push(url);
            if !delays.is_empty() || t != f.now {
                delays.push(f.now - t);
            }
            f.link.handle_connect_failed(f.now, "refused");
            events.extend(raised(&f.drain()));
        }
        assert_eq!(urls, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        // Never connected: no "lost" event (see a_manager_never_reached_raises_no_lost_event).
        assert_eq!(events, [], "{events:?}");
        let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for (d, b) in delays.iter().zip(bases) {
            let b = Duration::from_secs(b);
            assert!(*d >= b * 3 / 4 && *d <= b, "{d:?} vs {b:?}");
        }
        // Jitter: not all equal to the base.
        assert!(
            delays
                .iter()
                .zip(bases)
                .any(|(d, b)| *d != Duration::from_secs(b))
        );
    }

    #[test]
    fn stable_session_resets_backoff_short_one_does_not() {
        let mut f = Fixture::token();
        // Two failures: backoff at 4 s next.
        for _ in 0..2 {
            f.next();
            f.link.handle_connect_failed(f.now, "refused");
            f.drain();
        }
        f.connect_and_auth();
        f.advance(5 * SEC);
        let t = f.lose_link();
        f.next();
        let d = f.now - t;
        assert!(
            d >= 3 * SEC && d <= 4 * SEC,
            "short session kept backoff: {d:?}"
        );
        f.link.handle_connected(f.now);
        f.drain();
        f.link.handle_text(f.now, r#"{"type":"auth_ok"}"#);
        // Up for 2 minutes answering pings.
        let start = f.now;
        while f.now < start + 120 * SEC {
            if f.next().contains(&Action::SendPing) {
                f.link.handle_pong(f.now);
            }
        }
        let t = f.lose_link();
        f.next();
        assert!(f.now - t <= SEC, "stable session resets backoff");
    }

    #[test]
    fn auth_error_raises_once_and_backs_off_past_the_lockout() {
        let mut f = Fixture::new(
            1,
            Credentials::Token {
                token: "bad".into(),
            },
        );
        let mut attempts = Vec::new();
        let mut events = Vec::new();
        for _ in 0..6 {
            f.next();
            attempts.push(f.now);
            f.link.handle_connected(f.now);
            f.drain();
            f.link
                .handle_text(f.now, r#"{"type":"auth_error","message":"Invalid token"}"#);
            events.extend(raised(&f.drain()));
            // The manager then closes: already handled, no second report.
            f.link.handle_closed(f.now, "closed");
            assert!(f.drain().is_empty());
        }
        assert_eq!(
            events,
            [(
                Severity::Critical,
                Category::Manager,
                "Manager authentication failed: Invalid token".into()
            )]
        );
        // Never 5 attempts within any 60 s window; in fact at least 30 s apart.
        for w in attempts.windows(2) {
            assert!(w[1] - w[0] >= 30 * SEC, "{:?}", w[1] - w[0]);
        }
        assert_eq!(f.link.counters().auth_failures, 6);
    }

    #[test]
    fn auth_sent_and_not_accepted_backs_off_like_auth_error() {
        // A manager that closes during auth without auth_error, one that never answers,
        // and one that answers with a frame too large to read: each may count as a failed
        // auth on its side, so five of them must not fit in 60 s.
        type Fail = fn(&mut Fixture);
        let cases: [(&str, Fail); 3] = [
            ("closed", |f| {
                f.link.handle_closed(f.now, "closed by the manager")
            }),
            ("silent", |f| {
                // The auth deadline passes.
                let before = f.now;
                f.now = f.link.poll_timeout();
                assert_eq!(f.now - before, 10 * SEC);
                f.link.handle_timeout(f.now);
            }),
            ("too large", |f| {
                f.link.handle_frame_too_large(f.now, "Space limit exceeded")
            }),
        ];
        for (name, fail) in cases {
            let mut f = Fixture::new(
                1,
                Credentials::Token {
                    token: "tok".into(),
                },
            );
            let mut attempts = Vec::new();
            let mut events = Vec::new();
            for _ in 0..6 {
                let a = f.next();
                assert!(matches!(a[..], [Action::Connect { .. }]), "{name}: {a:?}");
                attempts.push(f.now);
                f.link.handle_connected(f.now);
                assert_eq!(f.drain(), [Action::SendAuth]);
                fail(&mut f);
                events.extend(raised(&f.drain()));
            }
            for w in attempts.windows(2) {
                assert!(w[1] - w[0] >= 30 * SEC, "{name}: {:?}", w[1] - w[0]);
            }
            // Not an auth_error, and never connected: no event at all.
            assert_eq!(events, [], "{name}");
            assert!(!f.link.ever_connected(), "{name}");
            assert_eq!(f.link.counters().auth_failures, 0, "{name}");
        }

        // A failure before auth went out (connect refused) keeps the normal backoff, and
        // a success resets the auth backoff.
        let mut f = Fixture::new(
            1,
            Credentials::Token {
                token: "tok".into(),
            },
        );
        f.next();
        f.link.handle_connected(f.now);
        f.drain();
        f.link.handle_closed(f.now, "closed");
        f.drain();
        f.connect_and_auth();
        f.advance(5 * SEC);
        let t = f.lose_link();
        f.next();
        f.link.handle_connect_failed(f.now, "refused");
        f.drain();
        assert!(f.now - t <= 2 * SEC, "normal backoff after a lost session");
        let t = f.now;
        f.next();
        assert!(f.now - t <= 4 * SEC, "normal backoff for a refused connect");
        f.link.handle_connected(f.now);
        f.drain();
        f.link.handle_closed(f.now, "closed during auth");
        f.drain();
        let t = f.now;
        f.next();
        let d = f.now - t;
        assert!(
            d >= 30 * SEC && d <= 40 * SEC,
            "auth backoff from its start: {d:?}"
        );
    }

    #[test]
    fn a_frame_too_large_to_read_is_counted_and_reconnects_with_normal_backoff() {
        let mut f = Fixture::token();
        f.connect_and_auth();
        f.advance(3 * SEC);
        f.link.handle_frame_too_large(f.now, "Space limit exceeded");
        let a = f.drain();
        assert!(matches!(&a[0], Action::Disconnect { reason } if reason.contains("too large")));
        assert_eq!(
            raised(&a),
            [(
                Severity::Warning,
                Category::Manager,
                "Manager connection lost, reconnecting".into()
            )]
        );
        assert_eq!(f.link.counters().oversize, 1);
        let t = f.now;
        let a = f.next();
        assert!(matches!(a[..], [Action::Connect { .. }]));
        assert!(f.now - t <= SEC, "normal backoff: {:?}", f.now - t);
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let actions = [
            Action::StoreCredentials {
                node_id: "n1".into(),
                node_secret: "s3cret-node".into(),
            },
            Action::Execute {
                command_id: "c1".into(),
                action: serde_json::from_value(serde_json::json!({"type": "create_flow",
                    "flow": {"input": {"type": "srt", "passphrase": "s3cret-pass"}}}))
                .unwrap(),
            },
        ];
        let text = format!("{actions:?}");
        assert!(text.contains("n1") && text.contains("CreateFlow"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        // The link's own debug line for messages out of place: a register_ack while up,
        // a command before auth.
        let log = capture_logs(|| {
            let mut f = Fixture::token();
            f.next();
            f.link.handle_connected(f.now);
            f.drain();
            f.link.handle_text(
                f.now,
                r#"{"type":"command","payload":{"command_id":"c","action":{"type":"update_config","config":{"k":"s3cret-early"}}}}"#,
            );
            f.link.handle_text(f.now, r#"{"type":"auth_ok"}"#);
            f.drain();
            f.link.handle_text(
                f.now,
                r#"{"type":"register_ack","payload":{"node_id":"n","node_secret":"s3cret-late"}}"#,
            );
            assert_eq!(f.link.counters().ignored, 2);
            assert!(f.drain().is_empty());
        });
        assert!(
            log.contains("out of place") && log.contains("register_ack"),
            "{log}"
        );
        assert!(!log.contains("s3cret"), "{log}");
    }

    #[test]
    fn manager_events_are_latched_per_connection_cycle() {
        let mut f = Fixture::token();
        let mut all = raised(&f.connect_and_auth());
        // Drop, then three failed attempts, then back up; twice.
        for _ in 0..2 {
            f.advance(5 * SEC);
            f.link.handle_closed(f.now, "eof");
            all.extend(raised(&f.drain()));
            for _ in 0..3 {
                f.next();
                f.link.handle_connect_failed(f.now, "refused");
                all.extend(raised(&f.drain()));
            }
            let a = f.connect_and_auth();
            let connected = a.iter().find_map(|a| match a {
                Action::Raise(e) if e.message == "Connected to manager" => Some(e.clone()),
                _ => None,
            });
            assert_eq!(connected.unwrap().details["failed_attempts"], 3);
            all.extend(raised(&a));
        }
        let msgs: Vec<&str> = all.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Connected to manager",
                "Manager connection lost, reconnecting",
                "Connected to manager",
                "Manager connection lost, reconnecting",
                "Connected to manager"
            ]
        );
    }

    /// "Lost, reconnecting" claims a link that was up: a node that never reached its
    /// manager raises nothing and says so through `ever_connected` and `last_error`.
    #[test]
    fn a_manager_never_reached_raises_no_lost_event() {
        let mut f = Fixture::token();
        for _ in 0..3 {
            f.next();
            f.link.handle_connect_failed(f.now, "connection refused");
            assert_eq!(raised(&f.drain()), []);
        }
        assert!(!f.link.ever_connected());
        assert_eq!(f.link.last_error(), Some("connection refused"));
        assert_eq!(f.link.counters().failed_attempts, 3);
        // Once up and then lost, the loss is the event (once per cycle).
        f.connect_and_auth();
        assert!(f.link.ever_connected());
        f.advance(5 * SEC);
        f.link.handle_closed(f.now, "eof");
        let mut msgs = raised(&f.drain());
        f.next();
        f.link.handle_connect_failed(f.now, "connection refused");
        msgs.extend(raised(&f.drain()));
        assert_eq!(
            msgs,
            [(
                Severity::Warning,
                Category::Manager,
                "Manager connection lost, reconnecting".into()
            )]
        );
    }

    #[test]
    fn auth_and_connect_deadlines() {
        let mut f = Fixture::token();
        f.next();
        let t = f.now;
        // Connect hangs: given up after 10 s.
        let a = f.next();
        assert_eq!(f.now - t, 10 * SEC);
        assert!(matches!(a[0], Action::Disconnect { .. }));
        f.next();
        f.link.handle_connected(f.now);
        f.drain();
        let t = f.now;
        let a = f.next();
        assert_eq!(f.now - t, 10 * SEC);
        assert!(matches!(a[0], Action::Disconnect { .. }));
    }

    #[test]
    fn garbage_is_counted_never_fatal() {
        let mut f = Fixture::token();
        f.connect_and_auth();
        for g in [
            "",
            "{",
            "null",
            "[]",
            r#"{"type":5}"#,
            r#"{"type":"command","payload":{}}"#,
        ] {
            f.link.handle_text(f.now, g);
        }
        f.link
            .handle_text(f.now, &" ".repeat(protocol::MAX_MESSAGE_BYTES + 1));
        f.link.handle_binary(3);
        f.link.handle_text(f.now, r#"{"type":"whatever"}"#);
        assert!(f.drain().is_empty());
        assert!(f.link.is_up());
        let c = f.link.counters();
        assert_eq!((c.malformed, c.oversize, c.ignored), (7, 1, 1));
        // Still answers commands and pings.
        f.link.handle_text(
            f.now,
            r#"{"type":"command","payload":{"command_id":"c1","action":{"type":"x"}}}"#,
        );
        f.link
            .handle_text(f.now, r#"{"type":"ping","timestamp":"t"}"#);
        let a = f.drain();
        assert!(matches!(&a[0], Action::Execute { command_id, .. } if command_id == "c1"));
        assert_eq!(a[1], Action::SendPong);
    }
}

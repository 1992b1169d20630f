//! The seed's four regression suites (`ffmpeg-session.lifecycle`, `stream-manager.lifecycle`,
//! `stream-manager.idle-recovery`, `health-route`), re-expressed on fake time with a fake
//! worker. No sleeps: time is an `Instant` the harness moves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::lifecycle::*;
use crate::events::{Category, Event, Severity};

/// The seed's session snapshot fields (runtime-recovery.txt), in its order.
const SEED_SNAPSHOT_KEYS: [&str; 12] = [
    "streamId",
    "sessionId",
    "state",
    "pid",
    "clientCount",
    "restartCount",
    "lastStartedAt",
    "lastStoppedAt",
    "lastRestartAt",
    "lastDataAt",
    "lastExitCode",
    "lastExitSignal",
];

const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing {
        idle_timeout: 3000 * MS,
        sweep_interval: 1000 * MS,
        restart_delay: 500 * MS,
        max_restarts: 3,
    }
}

/// A fake worker: starts at once with a pid, and dies when told to.
#[derive(Debug, Clone)]
struct FakeWorker {
    stream_id: String,
    alive: bool,
}

/// The manager, a clock, and the fake workers, driven like quinn's `Pair::drive`.
struct Harness {
    mgr: StreamManager,
    now: Instant,
    workers: BTreeMap<WorkerId, FakeWorker>,
    next_pid: u32,
    /// Every action seen, in order.
    log: Vec<Action>,
    /// When false, StartWorker actions are left pending (the worker "takes time").
    auto_start: bool,
    /// When true, a stopped worker's exit is not reported at once (it takes time to die).
    slow_exit: bool,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        Harness {
            mgr: StreamManager::new(timing(), 8, now),
            now,
            workers: BTreeMap::new(),
            next_pid: 1000,
            log: Vec::new(),
            auto_start: true,
            slow_exit: false,
        }
    }

    /// Applies every pending action, like the shell would.
    fn drive(&mut self) {
        while let Some(a) = self.mgr.poll_action() {
            self.log.push(a.clone());
            match a {
                Action::StartWorker {
                    stream_id, worker, ..
                } => {
                    self.next_pid += 1;
                    self.workers.insert(
                        worker,
                        FakeWorker {
                            stream_id,
                            alive: true,
                        },
                    );
                    if self.auto_start {
                        self.mgr
                            .worker_started(self.now, worker, Some(self.next_pid));
                    }
                }
                Action::StopWorker { worker, .. } => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.alive = false;
                    }
                    if !self.slow_exit {
                        // What the real shell reports for a worker it stopped.
                        self.mgr.worker_exited(
                            self.now,
                            worker,
                            Exit {
                                code: None,
                                signal: Some(15),
                                error: Some("stopped".into()),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Moves fake time forward to `now + d`, handling every timeout on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drive();
            let t = self.mgr.poll_timeout();
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.mgr.handle_timeout(self.now);
        }
        self.now = end;
        self.drive();
    }

    fn attach(&mut self, stream: &str, client: ClientId) -> SessionId {
        let id = self.mgr.attach(self.now, stream, client).expect("attach");
        self.drive();
        id
    }

    fn detach(&mut self, client: ClientId, reason: DetachReason) {
        self.mgr.detach(self.now, client, reason);
        self.drive();
    }

    /// The live worker of a stream, as the fake sees it.
    fn live_worker(&self, stream: &str) -> Option<WorkerId> {
        self.workers
            .iter()
            .find(|(_, w)| w.alive && w.stream_id == stream)
            .map(|(id, _)| *id)
    }

    /// The worker crashes on its own.
    fn crash(&mut self, stream: &str, code: i32) {
        let w = self.live_worker(stream).expect("a live worker");
        self.workers.get_mut(&w).unwrap().alive = false;
        self.mgr.worker_exited(
            self.now,
            w,
            Exit {
                code: Some(code),
                signal: None,
                error: Some("boom".into()),
            },
        );
        self.drive();
    }

    fn data(&mut self, stream: &str) {
        let w = self.live_worker(stream).expect("a live worker");
        self.mgr.worker_data(self.now, w, 1316);
    }

    fn session(&self, stream: &str) -> &Session {
        self.mgr.session(stream).expect("session exists")
    }

    fn starts(&self) -> usize {
        self.log
            .iter()
            .filter(|a| matches!(a, Action::StartWorker { .. }))
            .count()
    }

    fn stops(&self) -> usize {
        self.log
            .iter()
            .filter(|a| matches!(a, Action::StopWorker { .. }))
            .count()
    }

    /// The events the core asked the shell to raise, in order.
    fn events(&self) -> Vec<&Event> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::RaiseEvent(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Crashes the stream's worker until the session is `errored` (`max_restarts` + 1 exits).
    fn crash_until_errored(&mut self, stream: &str) {
        for _ in 0..timing().max_restarts {
            self.crash(stream, 1);
            self.advance(500 * MS);
        }
        self.crash(stream, 1);
        assert_eq!(self.session(stream).state, SessionState::Errored);
    }

    fn destroyed(&self, stream: &str) -> bool {
        self.log
            .iter()
            .any(|a| matches!(a, Action::Destroyed { stream_id, .. } if stream_id == stream))
    }
}

/// `ffmpeg-session.lifecycle.test.ts`
mod session_lifecycle {
    use super::*;

    #[test]
    fn recovery_restart_preserves_clients() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.attach("cam", 2);
        let first_pid = h.session("cam").pid;
        h.mgr.restart(h.now, "cam", StopReason::IdleTimeout);
        h.drive();
        let s = h.session("cam");
        assert_eq!(s.client_count(), 2, "restart must keep the clients");
        assert_eq!(s.state, SessionState::Running);
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.last_restart_at, Some(h.now));
        assert_ne!(s.pid, first_pid, "a new worker runs");
        assert!(!h.destroyed("cam"), "restart is not destroy");
        assert_eq!(h.starts(), 2);
    }

    #[test]
    fn restart_waits_for_the_old_worker_to_exit() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.slow_exit = true;
        h.mgr.restart(h.now, "cam", StopReason::IdleTimeout);
        h.drive();
        assert_eq!(h.starts(), 1, "no new worker while the old one lives");
        assert_eq!(h.session("cam").state, SessionState::Restarting);
        let old = h
            .log
            .iter()
            .find_map(|a| match a {
                Action::StopWorker { worker, .. } => Some(*worker),
                _ => None,
            })
            .unwrap();
        h.advance(200 * MS);
        h.mgr.worker_exited(h.now, old, Exit::default());
        h.drive();
        assert_eq!(h.starts(), 2);
        assert_eq!(h.session("cam").state, SessionState::Running);
    }

    #[test]
    fn manual_stop_clears_clients_and_never_restarts() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.attach("cam", 2);
        h.mgr.stop(h.now, "cam");
        h.drive();
        let detached: Vec<ClientId> = h
            .log
            .iter()
            .filter_map(|a| match a {
                Action::DetachClient { client, .. } => Some(*client),
                _ => None,
            })
            .collect();
        assert_eq!(detached, vec![1, 2], "manual stop detaches every client");
        assert!(h.mgr.client_stream(1).is_none());
        assert!(h.destroyed("cam"));
        h.advance(10_000 * MS);
        assert_eq!(h.starts(), 1, "manual stop never restarts");
        assert_eq!(h.mgr.stats().clients, 0);
    }

    #[test]
    fn late_exit_after_manual_stop_is_ignored() {
        let mut h = Harness::new();
        h.slow_exit = true;
        h.attach("cam", 1);
        let w = h.live_worker("cam").unwrap();
        h.mgr.stop(h.now, "cam");
        h.drive();
        h.mgr.worker_exited(
            h.now,
            w,
            Exit {
                code: Some(255),
                ..Exit::default()
            },
        );
        h.advance(5_000 * MS);
        assert_eq!(h.starts(), 1);
        assert!(h.mgr.session("cam").is_none());
    }

    #[test]
    fn unexpected_exit_restarts_after_the_delay() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.advance(100 * MS);
        h.crash("cam", 1);
        let s = h.session("cam");
        assert_eq!(s.state, SessionState::Restarting);
        assert_eq!(s.last_exit_code, Some(1));
        assert_eq!(s.last_stopped_at, Some(h.now));
        assert_eq!(s.pid, None);
        let crashed_at = h.now;
        h.advance(499 * MS);
        assert_eq!(h.starts(), 1, "not before STREAM_RESTART_DELAY_MS");
        h.advance(MS);
        assert_eq!(h.starts(), 2);
        let s = h.session("cam");
        assert_eq!(s.state, SessionState::Running);
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.last_restart_at, Some(crashed_at + 500 * MS));
        assert_eq!(s.client_count(), 1, "clients kept across the restart");
    }

    #[test]
    fn max_restarts_leads_to_errored_and_no_more_retries() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        for n in 1..=3 {
            h.crash("cam", 1);
            h.advance(500 * MS);
            assert_eq!(h.session("cam").restart_count, n);
            assert_eq!(h.session("cam").state, SessionState::Running);
        }
        h.crash("cam", 1);
        let s = h.session("cam");
        assert_eq!(s.state, SessionState::Errored);
        assert_eq!(s.restart_count, 3);
        assert_eq!(s.client_count(), 1, "errored is not teardown");
        assert!(h.log.iter().any(|a| matches!(
            a,
            Action::Errored {
                restart_count: 3,
                ..
            }
        )));
        h.advance(60_000 * MS);
        assert_eq!(h.starts(), 4, "no retry after errored");
        assert_eq!(h.session("cam").state, SessionState::Errored);
        assert_eq!(h.mgr.stats().errored, 1);
        assert_eq!(h.events().len(), 1, "one error event, not one per sweep");
    }

    #[test]
    fn errored_raises_a_critical_bridge_event_with_the_session_details() {
        let mut h = Harness::new();
        let sid = h.attach("cam", 1);
        // Restarts on the way are not events: they are being retried.
        for _ in 0..3 {
            h.crash("cam", 1);
            h.advance(500 * MS);
        }
        assert!(h.events().is_empty());
        h.crash("cam", 1);
        let events = h.events();
        assert_eq!(events.len(), 1);
        let e = events[0];
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.category, Category::Bridge);
        assert_eq!(
            e.message,
            "Bridge stream 'cam' stopped after 3 restarts: boom"
        );
        assert_eq!(e.flow_id, None);
        let d = serde_json::Value::Object(e.details.clone());
        assert_eq!(
            d,
            serde_json::json!({"streamId": "cam", "sessionId": sid, "restartCount": 3,
                               "lastError": "boom", "lastExitCode": 1})
        );
        // The state change is reported first, then the event.
        let errored = h
            .log
            .iter()
            .position(|a| matches!(a, Action::Errored { .. }))
            .unwrap();
        assert!(matches!(h.log[errored + 1], Action::RaiseEvent(_)));
    }

    #[test]
    fn an_exit_without_a_reason_is_described_by_its_code_or_signal() {
        let mut h = Harness::new();
        h.mgr = StreamManager::new(
            Timing {
                max_restarts: 0,
                ..timing()
            },
            8,
            h.now,
        );
        h.attach("cam", 1);
        let w = h.live_worker("cam").unwrap();
        h.mgr.worker_exited(
            h.now,
            w,
            Exit {
                signal: Some(9),
                ..Exit::default()
            },
        );
        h.drive();
        let e = h.events()[0].clone();
        assert_eq!(
            e.message,
            "Bridge stream 'cam' stopped after 0 restarts: killed by signal 9"
        );
        assert_eq!(e.details["lastExitSignal"], 9);
        assert!(!e.details.contains_key("lastExitCode"));
        assert_eq!(
            h.session("cam").last_error.as_deref(),
            Some("gave up after 0 restarts: killed by signal 9")
        );
    }

    #[test]
    fn a_retry_that_delivers_media_raises_recovered_once() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.crash_until_errored("cam");
        // A new viewer retries; the worker runs but the stream is not back before data.
        let sid = h.attach("cam", 2);
        assert_eq!(h.session("cam").state, SessionState::Running);
        assert_eq!(h.events().len(), 1);
        h.data("cam");
        h.drive();
        h.advance(100 * MS);
        h.data("cam");
        h.drive();
        let events = h.events();
        assert_eq!(events.len(), 2, "{events:#?}");
        let e = events[1];
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.category, Category::Bridge);
        assert_eq!(e.message, "Bridge stream 'cam' recovered");
        assert_eq!(e.details["streamId"], "cam");
        assert_eq!(e.details["sessionId"], sid);
    }

    #[test]
    fn an_errored_stream_raises_once_per_cycle_across_sessions() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.crash_until_errored("cam");
        // The viewer reloads the page: the session goes, the next one fails the same way.
        h.detach(1, DetachReason::Close);
        assert!(h.destroyed("cam"));
        h.attach("cam", 2);
        h.crash_until_errored("cam");
        assert_eq!(h.mgr.stats().errored, 2, "both are counted and logged");
        assert_eq!(h.events().len(), 1, "but the alarm is raised once");
        // Once it delivered again, the next failure is a new cycle with its own alarm.
        h.detach(2, DetachReason::Close);
        h.attach("cam", 3);
        h.data("cam");
        h.drive();
        h.crash_until_errored("cam");
        let messages: Vec<&str> = h.events().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Bridge stream 'cam' stopped after 3 restarts: boom",
                "Bridge stream 'cam' recovered",
                "Bridge stream 'cam' stopped after 3 restarts: boom",
            ]
        );
    }

    #[test]
    fn a_stream_that_never_errored_raises_nothing_on_data() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.crash("cam", 1);
        h.advance(500 * MS);
        h.data("cam");
        h.drive();
        assert!(h.events().is_empty());
    }

    #[test]
    fn spawn_failure_counts_like_an_exit() {
        let mut h = Harness::new();
        h.auto_start = false;
        h.attach("cam", 1);
        let w = h.live_worker("cam").unwrap();
        h.mgr.worker_exited(
            h.now,
            w,
            Exit {
                error: Some("spawn failed".into()),
                ..Exit::default()
            },
        );
        assert_eq!(h.session("cam").state, SessionState::Restarting);
        assert_eq!(h.session("cam").last_error.as_deref(), Some("spawn failed"));
    }

    #[test]
    fn a_new_client_retries_an_errored_session() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        for _ in 0..4 {
            h.crash("cam", 1);
            h.advance(500 * MS);
        }
        assert_eq!(h.session("cam").state, SessionState::Errored);
        h.attach("cam", 2);
        let s = h.session("cam");
        assert_eq!(s.state, SessionState::Running);
        assert_eq!(s.restart_count, 0);
        assert_eq!(s.client_count(), 2);
    }

    #[test]
    fn snapshot_has_the_seed_fields() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.data("cam");
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let snap = h.session("cam").snapshot(h.now, wall);
        let v = serde_json::to_value(&snap).unwrap();
        for key in SEED_SNAPSHOT_KEYS {
            assert!(v.get(key).is_some(), "snapshot lacks {key}: {v}");
        }
        assert_eq!(v["state"], "running");
        assert_eq!(v["clientCount"], 1);
        assert_eq!(v["lastDataAt"], 1_800_000_000_000u64);
        assert!(v["lastStoppedAt"].is_null());
    }
}

/// `stream-manager.lifecycle.test.ts`
mod stream_manager_lifecycle {
    use super::*;

    #[test]
    fn first_attach_starts_the_session() {
        let mut h = Harness::new();
        assert!(h.mgr.session("cam").is_none());
        h.attach("cam", 1);
        assert_eq!(h.starts(), 1);
        assert_eq!(h.session("cam").state, SessionState::Running);
        assert_eq!(h.mgr.stats().sessions_created, 1);
    }

    #[test]
    fn clients_of_one_stream_share_one_session() {
        let mut h = Harness::new();
        let a = h.attach("cam", 1);
        let b = h.attach("cam", 2);
        let c = h.attach("cam", 3);
        assert_eq!((a, b), (a, c));
        assert_eq!(h.starts(), 1, "start() only once");
        assert_eq!(h.mgr.stats().sessions_created, 1);
        assert_eq!(h.session("cam").client_count(), 3);
        // Another stream gets its own session.
        let d = h.attach("door", 4);
        assert_ne!(a, d);
        assert_eq!(h.starts(), 2);
    }

    #[test]
    fn last_client_close_stops_and_destroys() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.attach("cam", 2);
        h.detach(1, DetachReason::Close);
        assert_eq!(h.stops(), 0, "a client remains: no stop");
        assert!(!h.destroyed("cam"));
        h.detach(2, DetachReason::Close);
        assert_eq!(h.stops(), 1);
        assert!(h.destroyed("cam"));
        assert!(h.mgr.session("cam").is_none());
        h.advance(10_000 * MS);
        assert_eq!(h.starts(), 1, "the stop was manual: no restart");
    }

    #[test]
    fn websocket_error_path_also_cleans_up() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.detach(1, DetachReason::Error);
        assert_eq!(h.stops(), 1);
        assert!(h.destroyed("cam"));
        assert_eq!(h.mgr.stats().clients, 0);
        assert_eq!(h.mgr.stats().sessions, 0);
    }

    #[test]
    fn detach_of_unknown_client_is_harmless() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.detach(99, DetachReason::Close);
        h.detach(1, DetachReason::Close);
        h.detach(1, DetachReason::Close);
        assert_eq!(h.stops(), 1);
    }

    #[test]
    fn reattach_after_destroy_makes_a_new_session() {
        let mut h = Harness::new();
        let a = h.attach("cam", 1);
        h.detach(1, DetachReason::Close);
        let b = h.attach("cam", 2);
        assert_ne!(a, b);
        assert_eq!(h.starts(), 2);
        assert_eq!(h.session("cam").restart_count, 0);
    }

    #[test]
    fn clients_are_bounded_and_ids_unique() {
        let mut h = Harness::new();
        for c in 0..8 {
            h.attach("cam", c);
        }
        assert_eq!(h.mgr.attach(h.now, "cam", 8), Err(AttachError::Full));
        assert_eq!(h.mgr.attach(h.now, "cam", 3), Err(AttachError::Duplicate));
        assert_eq!(h.session("cam").client_count(), 8);
    }

    #[test]
    fn clients_survive_a_crash_and_the_restart() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.attach("cam", 2);
        h.crash("cam", 1);
        assert!(!h.destroyed("cam"));
        assert_eq!(h.session("cam").client_count(), 2);
        h.advance(500 * MS);
        assert_eq!(h.session("cam").client_count(), 2);
        assert_eq!(h.mgr.client_stream(2), Some("cam"));
    }

    #[test]
    fn detach_during_restart_delay_cancels_the_restart() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.crash("cam", 1);
        h.detach(1, DetachReason::Close);
        assert!(h.destroyed("cam"));
        h.advance(5_000 * MS);
        assert_eq!(h.starts(), 1);
    }

    #[test]
    fn stop_all_stops_every_session() {
        let mut h = Harness::new();
        h.attach("a", 1);
        h.attach("b", 2);
        h.mgr.stop_all(h.now);
        h.drive();
        assert_eq!(h.stops(), 2);
        assert_eq!(h.mgr.stats().sessions, 0);
    }
}

/// `stream-manager.idle-recovery.test.ts`
mod idle_recovery {
    use super::*;

    #[test]
    fn idle_timeout_triggers_restart_keeping_clients() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.data("cam");
        // Data keeps flowing for 5 s: no restart.
        for _ in 0..50 {
            h.advance(100 * MS);
            h.data("cam");
        }
        assert_eq!(h.starts(), 1);
        // Then it stops. idle 3 s, sweep every 1 s: restarted within 3 + 1 s.
        h.advance(3000 * MS);
        assert_eq!(h.starts(), 1, "not idle for longer than the timeout yet");
        h.advance(1000 * MS);
        assert_eq!(h.starts(), 2, "the sweep restarted the stalled worker");
        let s = h.session("cam");
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.client_count(), 1);
        assert_eq!(s.state, SessionState::Running);
        assert_eq!(h.mgr.stats().idle_recoveries, 1);
        assert!(h.log.iter().any(|a| matches!(
            a,
            Action::StopWorker {
                reason: StopReason::IdleTimeout,
                ..
            }
        )));
    }

    /// A worker that says it is alive (a flow tap whose flow is quiet) is not idle, however
    /// long it sends nothing.
    #[test]
    fn a_worker_that_says_it_is_alive_is_not_restarted() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        for _ in 0..60 {
            h.advance(1000 * MS);
            let w = h.live_worker("cam").expect("a live worker");
            h.mgr.worker_alive(h.now, w);
        }
        assert_eq!(h.starts(), 1);
        let s = h.session("cam");
        assert_eq!((s.state, s.restart_count), (SessionState::Running, 0));
        // Once it stops saying so, the sweep restarts it as any idle worker.
        h.advance(4001 * MS);
        assert_eq!(h.starts(), 2);
    }

    #[test]
    fn a_worker_that_never_sends_is_idle_too() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.advance(4001 * MS);
        assert_eq!(h.starts(), 2);
    }

    /// The sweep's destroy branch. The shell never leaves a session without clients (the
    /// last detach destroys it at once), so the test-only constructor makes one. It is
    /// running and idle past the timeout when the sweep comes, so a sweep that looked at
    /// staleness first would restart it: the sweep must destroy it instead.
    #[test]
    fn sweep_destroys_a_session_without_clients_instead_of_restarting_it() {
        let mut h = Harness::new();
        // Idle timeout 3 s, first sweep at 5 s.
        h.mgr = StreamManager::new(
            Timing {
                sweep_interval: 5000 * MS,
                ..timing()
            },
            8,
            h.now,
        );
        let sid = h.mgr.create_session_without_clients(h.now, "cam");
        h.drive();
        let worker = h.live_worker("cam").expect("its worker runs");
        assert_eq!(h.session("cam").state, SessionState::Running);
        assert_eq!(h.session("cam").client_count(), 0);
        h.log.clear();
        h.advance(4999 * MS);
        assert!(h.log.is_empty(), "nothing before the sweep: {:?}", h.log);
        h.advance(MS);
        assert_eq!(
            h.log,
            vec![
                Action::StopWorker {
                    stream_id: "cam".into(),
                    session_id: sid,
                    worker,
                    reason: StopReason::NoClients,
                },
                Action::Destroyed {
                    stream_id: "cam".into(),
                    session_id: sid,
                },
            ],
            "stopped and destroyed by the sweep, no StartWorker"
        );
        assert!(h.mgr.session("cam").is_none());
        let st = h.mgr.stats();
        assert_eq!(
            (st.sessions_destroyed, st.idle_recoveries, st.restarts),
            (1, 0, 0)
        );
        h.advance(20_000 * MS);
        assert_eq!(h.starts(), 0, "never started again");
    }

    /// Without clients, a session that is not running (its worker has not reported yet) is
    /// destroyed by the sweep too: "left alone" is about restarts, not about cleanup.
    #[test]
    fn sweep_destroys_a_starting_session_without_clients() {
        let mut h = Harness::new();
        h.auto_start = false;
        let sid = h.mgr.create_session_without_clients(h.now, "cam");
        h.drive();
        assert_eq!(h.session("cam").state, SessionState::Starting);
        h.log.clear();
        h.advance(1000 * MS);
        assert!(matches!(
            &h.log[..],
            [
                Action::StopWorker {
                    reason: StopReason::NoClients,
                    ..
                },
                Action::Destroyed { session_id, .. },
            ] if *session_id == sid
        ));
        assert_eq!(h.starts(), 0);
    }

    #[test]
    fn non_running_sessions_are_left_alone() {
        let mut h = Harness::new();
        h.auto_start = false;
        h.attach("cam", 1);
        assert_eq!(h.session("cam").state, SessionState::Starting);
        h.advance(10_000 * MS);
        assert_eq!(h.starts(), 1, "starting: no idle recovery");
        assert_eq!(h.stops(), 0);

        // Errored: left alone too.
        let mut h = Harness::new();
        h.attach("cam", 1);
        for _ in 0..4 {
            h.crash("cam", 1);
            h.advance(500 * MS);
        }
        assert_eq!(h.session("cam").state, SessionState::Errored);
        let starts = h.starts();
        h.advance(20_000 * MS);
        assert_eq!(h.starts(), starts);
        assert_eq!(h.session("cam").state, SessionState::Errored);

        // Restarting (waiting for the delay): the sweep does not add a second restart.
        let mut h = Harness::new();
        h.mgr = StreamManager::new(
            Timing {
                restart_delay: 10_000 * MS,
                ..timing()
            },
            8,
            h.now,
        );
        h.attach("cam", 1);
        h.crash("cam", 1);
        h.advance(9_000 * MS);
        assert_eq!(h.starts(), 1);
        assert_eq!(h.stops(), 0);
        h.advance(1_000 * MS);
        assert_eq!(h.starts(), 2);
    }

    #[test]
    fn idle_restarts_count_toward_max_restarts() {
        let mut h = Harness::new();
        h.attach("cam", 1);
        h.advance(4001 * MS);
        // The worker the shell stopped says "stopped"; the session says why it was stopped.
        assert_eq!(h.session("cam").last_error.as_deref(), Some("idle timeout"));
        h.advance(60_000 * MS);
        let s = h.session("cam");
        assert_eq!(s.state, SessionState::Errored);
        assert_eq!(s.restart_count, 3);
        assert_eq!(h.starts(), 4);
        assert_eq!(
            s.last_error.as_deref(),
            Some("gave up after 3 restarts: idle timeout")
        );
        let errored: Vec<String> = h
            .log
            .iter()
            .filter_map(|a| match a {
                Action::RaiseEvent(e) if e.severity == Severity::Critical => {
                    Some(e.message.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(errored.len(), 1, "{errored:?}");
        assert!(
            errored[0].ends_with("stopped after 3 restarts: idle timeout"),
            "{errored:?}"
        );
    }

    #[test]
    fn env_overrides_the_config() {
        let env = |k: &str| match k {
            "STREAM_IDLE_TIMEOUT_MS" => Some("1234".to_string()),
            "STREAM_MAX_RESTARTS" => Some("9".to_string()),
            "STREAM_SWEEP_INTERVAL_MS" => Some("1".to_string()),
            "STREAM_RESTART_DELAY_MS" => Some(" 86400000 ".to_string()),
            _ => None,
        };
        let (t, problems) = timing().with_env(env);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            t,
            Timing {
                idle_timeout: 1234 * MS,
                sweep_interval: MS,
                restart_delay: 86_400_000 * MS,
                max_restarts: 9,
            }
        );
        assert_eq!(super::super::check_env(env), Ok(()));
        let (t, problems) = timing().with_env(|k| (k == "STREAM_MAX_RESTARTS").then(|| "0".into()));
        assert_eq!((t.max_restarts, problems.len()), (0, 0));
    }

    /// An env value the config would refuse is refused too (`BridgeConfig::MS_RANGE`),
    /// named, and not applied; `check_env`, which the daemon runs before starting, fails.
    #[test]
    fn env_values_outside_the_config_ranges_are_refused() {
        let cases = [
            (
                "STREAM_IDLE_TIMEOUT_MS",
                "0",
                "is out of range (1..=86400000)",
            ),
            (
                "STREAM_SWEEP_INTERVAL_MS",
                "0",
                "is out of range (1..=86400000)",
            ),
            (
                "STREAM_RESTART_DELAY_MS",
                "0",
                "is out of range (1..=86400000)",
            ),
            (
                "STREAM_IDLE_TIMEOUT_MS",
                "86400001",
                "is out of range (1..=86400000)",
            ),
            (
                "STREAM_MAX_RESTARTS",
                "4294967296",
                "is out of range (0..=4294967295)",
            ),
            ("STREAM_RESTART_DELAY_MS", "soon", "is not a whole number"),
            ("STREAM_SWEEP_INTERVAL_MS", "-5", "is not a whole number"),
        ];
        for (name, raw, why) in cases {
            let env = |k: &str| (k == name).then(|| raw.to_owned());
            let (t, problems) = timing().with_env(env);
            assert_eq!(t, timing(), "{name}={raw} must not be applied");
            assert_eq!(problems, vec![format!("{name}={raw:?} {why}")]);
            assert_eq!(
                super::super::check_env(env).unwrap_err().to_string(),
                format!("invalid bridge environment: {name}={raw:?} {why}")
            );
        }
        // Every bad variable is named at once.
        let e = super::super::check_env(|k| (k != "STREAM_MAX_RESTARTS").then(|| "0".to_owned()))
            .unwrap_err()
            .to_string();
        for name in &Timing::ENV[..3] {
            assert!(e.contains(name), "{e}");
        }
    }
}

/// The shell on a real runtime with a fake worker: clients over in-memory streams.
mod shell {
    use std::rc::Rc;

    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::super::{Bridge, Exit, Launcher};
    use crate::config::BridgeConfig;
    use crate::events::{Category, Events, Severity};

    pub fn run<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    pub fn bridge_config(queue: usize) -> BridgeConfig {
        let v = serde_json::json!({
            "bridge": {"streams": {"cam": {"rtsp_url": "rtsp://127.0.0.1:9/x"}},
                       "client_queue_chunks": queue, "max_client_lags": 3}
        });
        crate::config::parse(&v.to_string())
            .unwrap()
            .bridge
            .unwrap()
    }

    /// A fake worker that says it started (pid 4242) and waits to be stopped.
    pub fn idle_launcher() -> Launcher {
        Rc::new(|_spec, ctx| {
            Box::pin(async move {
                ctx.started(Some(4242));
                ctx.stop.notified().await;
                Exit {
                    signal: Some(15),
                    ..Exit::default()
                }
            })
        })
    }

    /// A bridge whose camera fails at once with a 401, and `STREAM_MAX_RESTARTS=0`: errored
    /// on its first exit.
    fn failing_bridge(cfg: &BridgeConfig, events: Events) -> Rc<Bridge> {
        let failing: Launcher = Rc::new(|_spec, ctx| {
            Box::pin(async move {
                ctx.started(None);
                Exit {
                    error: Some("rtsp: 401 Unauthorized".into()),
                    ..Exit::default()
                }
            })
        });
        Bridge::with_launcher(
            Some(cfg),
            Default::default(),
            events,
            None,
            |k| (k == "STREAM_MAX_RESTARTS").then(|| "0".to_owned()),
            failing,
        )
    }

    /// The shell raises the core's event through the node's `Events`: a camera that fails at
    /// once, with `STREAM_MAX_RESTARTS=0`, is errored on its first exit.
    #[test]
    fn errored_session_raises_its_event_through_events() {
        run(async {
            let cfg = bridge_config(16);
            let events = Events::in_memory(16);
            let b = failing_bridge(&cfg, events.clone());
            let _client = b.attach("cam").unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(b.snapshots()[0].state, super::SessionState::Errored);
            let raised = events.snapshot();
            assert_eq!(raised.len(), 1, "{raised:#?}");
            let e = &raised[0].event;
            assert_eq!(
                (e.severity, e.category),
                (Severity::Critical, Category::Bridge)
            );
            assert_eq!(
                e.message,
                "Bridge stream 'cam' stopped after 0 restarts: rtsp: 401 Unauthorized"
            );
            assert_eq!(e.details["streamId"], "cam");
            assert_eq!(e.details["sessionId"], b.snapshots()[0].session_id);
            assert_eq!(e.details["restartCount"], 0);
            b.shutdown().await;
        });
    }

    /// A client of a session that gives up is told why in its close frame (1011, the
    /// session's error) instead of being left waiting in silence.
    #[test]
    fn clients_of_an_errored_session_get_a_1011_close_with_the_reason() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        run(async {
            let cfg = bridge_config(16);
            let b = failing_bridge(&cfg, Events::in_memory(16));
            let (srv, cli) = tokio::io::duplex(1 << 16);
            let ws = WebSocketStream::from_raw_socket(srv, Role::Server, None).await;
            let task = tokio::task::spawn_local(super::super::ws::client(b.clone(), "cam", ws));
            let mut reader = WebSocketStream::from_raw_socket(cli, Role::Client, None).await;
            let close = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    match reader.next().await {
                        Some(Ok(Message::Close(frame))) => break frame,
                        Some(Ok(_)) => continue,
                        other => panic!("no close frame: {other:?}"),
                    }
                }
            })
            .await
            .expect("a close frame within 5 s")
            .expect("with a code");
            assert_eq!(close.code, CloseCode::Error);
            assert_eq!(
                close.reason.as_str(),
                "gave up after 0 restarts: rtsp: 401 Unauthorized"
            );
            tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("the client task ends")
                .unwrap();
            // The last client left: the errored session is gone; a new client starts over.
            assert!(b.snapshots().is_empty(), "{:?}", b.snapshots());
            b.shutdown().await;
        });
    }

    /// A flow tap follows its flow through a stop and a restart (a new ring), with no
    /// worker restart, no idle recovery and no give-up while the flow is away: restarting
    /// the tap could not bring the flow's input back. Paused tokio time: the tap's
    /// one-second checks pass at once.
    #[test]
    fn a_flow_tap_follows_its_flow_through_a_restart() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let v = serde_json::json!({
                "flows": [{"id": "f1", "input": {"type": "udp", "bind_addr": "127.0.0.1:5000"},
                           "outputs": []}],
                "bridge": {"streams": {"tap": {"flow_id": "f1"}}}
            });
            let cfg = crate::config::parse(&v.to_string())
                .unwrap()
                .bridge
                .unwrap();
            let taps = crate::flow::manager::FlowTaps::default();
            let first = Rc::new(crate::ts::ring::FlowRing::new(16));
            taps.borrow_mut().insert("f1".into(), first.clone());
            let b = Bridge::with_launcher(
                Some(&cfg),
                taps.clone(),
                Events::in_memory(16),
                None,
                |_| None,
                Rc::new(super::super::real_worker),
            );
            // No `run()`: its sweep reads the real clock, which paused time does not move.
            let client = b.attach("tap").unwrap();
            let mut reader = client.ring.ring.borrow().reader();
            let mut received = Vec::new();
            let mut settle = async |received: &mut Vec<u8>| {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                let r = client.ring.ring.borrow();
                while let crate::ts::ring::Read::Chunk(c) = r.read(&mut reader) {
                    received.extend_from_slice(c.data);
                }
            };
            settle(&mut received).await;
            first.push(&packets(2, 1), 0);
            settle(&mut received).await;
            assert_eq!(received, packets(2, 1));
            // The flow stops, stays away for a minute (well past the idle timeout and
            // every restart), then comes back with a new ring.
            taps.borrow_mut().remove("f1");
            for _ in 0..40 {
                settle(&mut received).await;
            }
            let second = Rc::new(crate::ts::ring::FlowRing::new(16));
            taps.borrow_mut().insert("f1".into(), second.clone());
            settle(&mut received).await;
            second.push(&packets(3, 2), 0);
            settle(&mut received).await;
            assert_eq!(received[2 * 188..], packets(3, 2)[..]);
            let s = &b.snapshots()[0];
            assert_eq!(s.state, super::SessionState::Running);
            assert_eq!(s.restart_count, 0);
            b.shutdown().await;
        });
    }

    fn packets(n: usize, tag: u8) -> Vec<u8> {
        let mut v = vec![tag; n * 188];
        for p in v.chunks_mut(188) {
            p[0] = 0x47;
        }
        v
    }

    #[test]
    fn slow_client_is_dropped_and_never_slows_the_fast_one() {
        run(async {
            let cfg = bridge_config(16);
            let b = Bridge::with_launcher(
                Some(&cfg),
                Default::default(),
                Events::in_memory(16),
                None,
                |_| None,
                idle_launcher(),
            );
            tokio::task::spawn_local(b.clone().run());
            // Fast client: reads everything. Slow client: a 2 KiB pipe it never reads.
            let (fast_srv, fast_cli) = tokio::io::duplex(1 << 20);
            let (slow_srv, _slow_cli) = tokio::io::duplex(2048);
            let fast_ws = WebSocketStream::from_raw_socket(fast_srv, Role::Server, None).await;
            let slow_ws = WebSocketStream::from_raw_socket(slow_srv, Role::Server, None).await;
            let fast =
                tokio::task::spawn_local(super::super::ws::client(b.clone(), "cam", fast_ws));
            let slow =
                tokio::task::spawn_local(super::super::ws::client(b.clone(), "cam", slow_ws));
            let mut reader = WebSocketStream::from_raw_socket(fast_cli, Role::Client, None).await;
            let got = Rc::new(std::cell::Cell::new(0usize));
            let counter = got.clone();
            let read_task = tokio::task::spawn_local(async move {
                while let Some(Ok(m)) = reader.next().await {
                    if let Message::Binary(d) = m {
                        assert_eq!(d.len() % 188, 0, "frames are whole TS packets");
                        counter.set(counter.get() + d.len());
                    }
                }
            });
            // Let both attach and the worker start.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(b.health().clients, 2);
            assert_eq!(b.snapshots()[0].pid, Some(4242));
            let ring = b.rings.borrow().get("cam").cloned().unwrap();
            // Chunks of 1 to 7 packets, as a worker's batches end: lost chunks are counted
            // as chunks, not derived from packets.
            let chunks = 16 * 12;
            // After each chunk every task runs once or twice (4 yields): the fast client has
            // sent it and its reader has it before the next chunk comes, whatever the slow
            // client does. Counted in scheduling rounds, not wall time, so it holds under QEMU.
            let mut disconnected_at = None;
            let mut written = 0;
            for n in 1..=chunks {
                let chunk = packets(1 + n % 7, 1);
                written += chunk.len();
                ring.push(&chunk, 0);
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(
                    got.get(),
                    written,
                    "the fast client has chunk {n} before the next one is written"
                );
                if disconnected_at.is_none() && b.health().slow_disconnects == 1 {
                    disconnected_at = Some(n as u64);
                }
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while got.get() < written && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(got.get(), written, "the fast client lost nothing");
            tokio::time::timeout(std::time::Duration::from_secs(5), slow)
                .await
                .expect("slow client disconnected")
                .unwrap();
            let h = b.health();
            assert_eq!(h.slow_disconnects, 1);
            // The slow client looks at the ring after every chunk, so each lap is noticed at
            // the first chunk that overwrites the one it needs, 17 behind on a 16-chunk
            // ring; it is closed at its third lap (`max_client_lags`).
            assert_eq!(h.lagged_chunks, 3 * 17, "{h:?}");
            // Every chunk written before the disconnect is accounted for: sent to the slow
            // client (its frames beyond the fast client's one per chunk), the one frame stuck
            // in its socket, or counted as lagged.
            let sent_to_slow = h.frames_sent - chunks as u64;
            assert_eq!(
                disconnected_at,
                Some(sent_to_slow + 1 + h.lagged_chunks),
                "{h:?}"
            );
            assert_eq!(h.clients, 1, "the fast client stays");
            assert_eq!(b.snapshots()[0].client_count, 1);
            // Manual stop closes the remaining client and destroys the session.
            b.stop("cam");
            tokio::time::timeout(std::time::Duration::from_secs(5), fast)
                .await
                .unwrap()
                .unwrap();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_task).await;
            assert_eq!(b.health().sessions, 0);
            assert_eq!(b.health().clients, 0);
        });
    }
}

/// `health-route.test.ts`: `/healthz` over a real HTTP connection on loopback.
mod health_route {
    use std::rc::Rc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::shell::{bridge_config, idle_launcher, run};
    use crate::events::Events;
    use crate::node::Node;

    const TOKEN: &str = "health-route-test-token";

    async fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn keys(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("an object: {v}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys_of(k: &[&str]) -> std::collections::BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn healthz_is_200_with_a_stable_structure_and_the_sessions() {
        run(async {
            let mut cfg = crate::config::parse(crate::config::EMBEDDED_DEFAULT).unwrap();
            cfg.flows.clear();
            cfg.bridge = Some(bridge_config(64));
            let node: Rc<Node> = Node::start_with_launcher(
                cfg,
                None,
                Events::in_memory(100),
                None,
                Some(idle_launcher()),
            )
            .await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let listener = crate::net::listener::Listener::alone(
                listener,
                "api",
                crate::net::listener::Limits::default(),
            );
            let access = crate::http::Access::new(
                crate::secret::Secret::new(TOKEN),
                None,
                Vec::new(),
                Vec::new(),
                false,
            );
            tokio::task::spawn_local(crate::http::serve(listener, node.clone(), Rc::new(access)));

            // No session yet: the structure is there, empty.
            let (status, v) = get(port, "/healthz").await;
            assert_eq!(status, 200);
            for key in [
                "status",
                "version",
                "uptime_secs",
                "active_flows",
                "total_flows",
                "bridge",
                "sessions",
            ] {
                assert!(v.get(key).is_some(), "healthz lacks {key}: {v}");
            }
            assert_eq!(v["status"], "ok");
            assert_eq!(v["sessions"], serde_json::json!([]));
            // Exactly these keys: a field added, renamed or dropped is a change of the
            // documented structure (docs/bridge.md) and must show up here.
            assert_eq!(
                keys(&v["bridge"]),
                keys_of(&[
                    "streams",
                    "sessions",
                    "clients",
                    "restarts",
                    "bytes",
                    "bytes_sent",
                    "frames_sent",
                    "sessions_created",
                    "sessions_destroyed",
                    "unexpected_exits",
                    "idle_recoveries",
                    "errored",
                    "lagged_chunks",
                    "slow_disconnects",
                    "refused_clients",
                    "idle_timeout_ms",
                    "sweep_interval_ms",
                    "restart_delay_ms",
                    "max_restarts",
                ]),
                "{v}"
            );
            assert_eq!(v["bridge"]["streams"], 1);

            // A client attached: its session shows up, as the manager reports it.
            let _a = node.bridge.attach("cam").unwrap();
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            let (status, v) = get(port, "/healthz").await;
            assert_eq!(status, 200);
            assert_eq!(v["bridge"]["sessions"], 1);
            assert_eq!(v["bridge"]["clients"], 1);
            let s = &v["sessions"][0];
            // The seed's snapshot fields, and Quoll's two additions (`lastError`, `bytes`).
            assert_eq!(
                keys(s),
                keys_of(&[&super::SEED_SNAPSHOT_KEYS[..], &["lastError", "bytes"]].concat()),
                "{s}"
            );
            assert_eq!(s["streamId"], "cam");
            assert_eq!(s["state"], "running");
            assert_eq!(s["pid"], 4242);
            assert_eq!(s["clientCount"], 1);
            assert!(s["lastStartedAt"].as_u64().is_some());
            // It is what the stream manager says, serializable as is.
            let direct = serde_json::to_value(node.bridge.snapshots()).unwrap();
            assert_eq!(v["sessions"], direct);
            let text = serde_json::to_string(&node.health().await).unwrap();
            assert!(text.contains("\"sessions\""));

            // Unknown stream: 404 on the WebSocket route; a plain GET of a known one: 426.
            let (status, _) = get(port, "/ws/stream/nope").await;
            assert_eq!(status, 404);
            let (status, _) = get(port, "/ws/stream/cam").await;
            assert_eq!(status, 426);
            node.shutdown().await;
        });
    }
}

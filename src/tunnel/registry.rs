//! The tunnels of a node, running (the build with the `tunnels` feature): one task per
//! enabled tunnel (`run.rs`), started, replaced and stopped by [`Tunnels::apply`].
//!
//! `apply` diffs by id against what runs: a tunnel whose config and `tunnel_tls` are the same
//! is not touched (the manager re-pushes its tunnels on every connect, and that must not
//! bounce traffic); a changed one is stopped and started again; a removed or disabled one is
//! stopped ("Tunnel '{name}' stopped"); a new one started ("Tunnel '{name}' started").
//!
//! A replacement waits for the task it replaces to end before binding anything, so the new
//! task can take the same `local_addr` or `direct_listen_addr`. A stopped task is told to
//! stop (it unbinds from the relay and closes its connection) and given
//! [`STOP_GRACE`] to do it before it is aborted.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TunnelContext;
use super::run;
use super::shared::Shared;
use super::status::TunnelStatus;
use crate::config::TunnelMode;
use crate::config::{TunnelConfig, TunnelTlsConfig};
use crate::events::Event;

/// How long a stopping tunnel has to unbind and close before its task is aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

pub struct Tunnels {
    ctx: TunnelContext,
    /// In the config's order, disabled ones included (reported stopped).
    entries: RefCell<Vec<Entry>>,
}

struct Entry {
    config: TunnelConfig,
    tls: TunnelTlsConfig,
    /// `None`: disabled, not running.
    running: Option<Running>,
}

/// One tunnel's task and what is shared with it.
struct Running {
    shared: Rc<Shared>,
    stop: watch::Sender<bool>,
    /// Ends once the task has ended; a replacement waits on it.
    done: Rc<Done>,
}

/// The end of a tunnel's task, awaitable by several: the one that replaces it and
/// `stop_all`.
pub(super) struct Done {
    handle: RefCell<Option<JoinHandle<()>>>,
    ended: watch::Sender<bool>,
}

impl Done {
    /// Wait for the task to end, aborting it after `grace`.
    pub(super) async fn wait(&self, grace: Duration) {
        let mut ended = self.ended.subscribe();
        let finished = tokio::time::timeout(grace, ended.wait_for(|e| *e)).await;
        let handle = if finished.is_err() {
            self.handle.borrow_mut().take()
        } else {
            None
        };
        if let Some(h) = handle {
            tracing::debug!("tunnel task did not stop in time: aborted");
            h.abort();
            // The abort takes effect at the task's next poll; wait for it so whatever it
            // held (sockets) is dropped before the caller goes on.
            let _ = h.await;
            self.ended.send_replace(true);
        }
    }
}

impl Tunnels {
    pub fn new(ctx: TunnelContext) -> Tunnels {
        Tunnels {
            ctx,
            entries: RefCell::new(Vec::new()),
        }
    }

    /// Run `tunnels` as they now are; see the module doc. Call from inside the `LocalSet`.
    pub fn apply(&self, tunnels: &[TunnelConfig], tls: &TunnelTlsConfig) {
        let mut old = std::mem::take(&mut *self.entries.borrow_mut());
        let mut next = Vec::with_capacity(tunnels.len());
        for config in tunnels {
            let prev = old
                .iter()
                .position(|e| e.config.id == config.id)
                .map(|i| old.remove(i));
            next.push(self.next_entry(prev, config, tls));
        }
        // What is left was removed from the config.
        for entry in old {
            if let Some(running) = entry.running {
                self.stop(&entry.config, running);
            }
        }
        *self.entries.borrow_mut() = next;
    }

    fn next_entry(
        &self,
        prev: Option<Entry>,
        config: &TunnelConfig,
        tls: &TunnelTlsConfig,
    ) -> Entry {
        let mut previous = None;
        if let Some(prev) = prev {
            let same = prev.config == *config && prev.tls == *tls;
            match prev.running {
                Some(running) if same => {
                    return Entry {
                        running: Some(running),
                        ..prev
                    };
                }
                Some(running) => previous = Some(self.stop(&prev.config, running)),
                None if same => return prev,
                None => {}
            }
        }
        let running = config.enabled.then(|| self.start(config, tls, previous));
        Entry {
            config: config.clone(),
            tls: tls.clone(),
            running,
        }
    }

    fn start(
        &self,
        config: &TunnelConfig,
        tls: &TunnelTlsConfig,
        previous: Option<Rc<Done>>,
    ) -> Running {
        let events = &self.ctx.events;
        events.raise(Event::tunnel_started(&config.id, &config.name));
        if tls.insecure_skip_verify {
            events.raise(Event::tunnel_tls_insecure(&config.id, &config.name));
        }
        let shared = Rc::new(Shared::new());
        let (stop, stop_rx) = watch::channel(false);
        let (ended, _) = watch::channel(false);
        let done = Rc::new(Done {
            handle: RefCell::new(None),
            ended,
        });
        let mut task = run::Task {
            ctx: self.ctx.clone(),
            config: config.clone(),
            tls: tls.clone(),
            shared: shared.clone(),
            stop: stop_rx,
        };
        let done_in_task = done.clone();
        let handle = tokio::task::spawn_local(async move {
            if let Some(previous) = previous {
                previous.wait(STOP_GRACE).await;
            }
            let result = match task.start() {
                Ok(mut plane) => match task.config.mode {
                    TunnelMode::Relay => super::relay::run(&mut task, &mut plane).await,
                    TunnelMode::Direct => super::direct::run(&mut task, &mut plane).await,
                },
                Err(e) => Err(e),
            };
            task.finish(result);
            done_in_task.ended.send_replace(true);
        });
        *done.handle.borrow_mut() = Some(handle);
        Running { shared, stop, done }
    }

    /// Tell the task to stop and report it; the returned end is for whoever waits on it.
    fn stop(&self, config: &TunnelConfig, running: Running) -> Rc<Done> {
        running.stop.send_replace(true);
        self.ctx
            .events
            .raise(Event::tunnel_stopped(&config.id, &config.name));
        running.done
    }

    /// Each tunnel's state and counters, in the config's order.
    pub fn status(&self, now: Instant) -> Vec<TunnelStatus> {
        self.entries
            .borrow()
            .iter()
            .map(|e| match &e.running {
                Some(r) => r.shared.status(&e.config, now),
                None => TunnelStatus::stopped(&e.config),
            })
            .collect()
    }

    /// Stop every tunnel (the node is shutting down) and wait for their tasks to end.
    pub async fn stop_all(&self) {
        let entries = std::mem::take(&mut *self.entries.borrow_mut());
        let mut ending = Vec::new();
        for entry in entries {
            if let Some(running) = entry.running {
                ending.push(self.stop(&entry.config, running));
            }
        }
        for done in ending {
            done.wait(STOP_GRACE).await;
        }
    }
}

#[cfg(test)]
mod tests;

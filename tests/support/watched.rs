//! State a fake peer's thread updates and a test waits on (`tests/fake_manager`,
//! `tests/fake_relay`): a mutex, and a condvar notified on every update, so a test waits for
//! a condition instead of sleeping.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Watched<S> {
    state: Mutex<S>,
    changed: Condvar,
}

impl<S> Watched<S> {
    pub fn new(state: S) -> Self {
        Watched {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// The state, also after a panicking holder (a failed test must still report it).
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn update(&self, f: impl FnOnce(&mut S)) {
        f(&mut self.lock());
        self.notify();
    }

    /// Wake the waiters after changing the state through [`Watched::lock`].
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Wait until `cond` holds, up to `limit`; false if it never did.
    pub fn wait(&self, limit: Duration, mut cond: impl FnMut(&S) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        loop {
            if cond(&s) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

//! Wake-ups for the packet path that cost as little as the kernel allows.
//!
//! [`OneShotReadable`]: readiness for one socket that can be switched off between waits.
//! tokio registers a socket edge-triggered and for good: every datagram that arrives wakes
//! the runtime thread, whether or not a task wants it yet. While an input is draining its
//! socket on a timer (`input::udp`), those wake-ups are pure cost, one context switch per
//! datagram. So the socket sits instead in a private epoll set with `EPOLLONESHOT`, and
//! tokio watches that set's descriptor. Arming is one `epoll_ctl`; the first datagram after
//! it makes the set readable once and disarms it; later datagrams wake nobody.
//!
//! [`Ticker`]: a periodic timer on a `timerfd`, for the busy input's drain period. tokio's
//! own timer would do, but it rounds to whole milliseconds (a 1 ms period became 2) and a
//! timer firing reaches a `LocalSet` task from outside it, which wakes the runtime through
//! its eventfd: one `write` and one extra `epoll_wait` per tick. A timerfd expiry is plain
//! I/O readiness, like a datagram.
//!
//! Nothing here allocates after `new`.

// Wraps syscalls (see the module doc): one of the few modules where `unsafe` may be.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub struct OneShotReadable {
    set: AsyncFd<OwnedFd>,
    socket: i32,
}

impl OneShotReadable {
    /// Put `socket` (disarmed) in a new epoll set and register the set with the reactor.
    /// `socket` must outlive this value (the caller keeps both in one struct).
    pub fn new(socket: BorrowedFd<'_>) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let set = unsafe { OwnedFd::from_raw_fd(raw) };
        // Added with no events: nothing fires until the first arm().
        ctl(set.as_fd(), libc::EPOLL_CTL_ADD, socket.as_raw_fd(), 0)?;
        // SAFETY: `set` is an open epoll descriptor owned by the AsyncFd for its whole
        // lifetime, and as_raw_fd() of an OwnedFd always returns that same descriptor.
        let set = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(OneShotReadable {
            set,
            socket: socket.as_raw_fd(),
        })
    }

    /// Wait until the socket is readable (at once if it already holds data), then leave it
    /// disarmed: until the next call, arrivals on it wake nothing.
    pub async fn readable(&self) -> io::Result<()> {
        // Level-triggered check on re-arm: a socket that already holds datagrams makes the
        // set ready immediately, so nothing that arrived while disarmed is missed.
        ctl(
            self.set.get_ref().as_fd(),
            libc::EPOLL_CTL_MOD,
            self.socket,
            (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        )?;
        loop {
            let mut guard = self.set.readable().await?;
            // Take the event out of the private set: that is what disarms the one-shot
            // registration, and it tells a stale readiness of the set from a real one.
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: `ev` is a valid buffer for one event; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(self.set.as_raw_fd(), &mut ev, 1, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // The set is drained either way; its next readiness is a new edge.
            guard.clear_ready();
            if n > 0 {
                return Ok(());
            }
        }
    }
}

/// A periodic timer that wakes one task per period while started.
///
/// Each tick reads the expiry count: the kernel re-arms a periodic timerfd only when it is
/// read, so a tick costs its wake-up and one 8-byte `read`.
pub struct Ticker {
    fd: AsyncFd<File>,
}

impl Ticker {
    /// A stopped ticker.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: as in OneShotReadable::new: the AsyncFd owns the open descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Ticker { fd })
    }

    /// Tick every `period` (at least 1 µs) from now on; on a running ticker, this replaces
    /// its period and the next expiry is one new period away.
    pub fn start(&self, period: Duration) -> io::Result<()> {
        let p = timespec(period.max(Duration::from_micros(1)));
        self.set(libc::itimerspec {
            it_interval: p,
            it_value: p,
        })
    }

    /// Stop ticking. A tick that fired just before may still be reported once by the next
    /// [`tick`](Self::tick) after a restart: one early drain, no harm.
    pub fn stop(&self) -> io::Result<()> {
        let zero = timespec(Duration::ZERO);
        self.set(libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        })
    }

    /// Wait for the next expiry (returns at once if one happened since the last call).
    pub async fn tick(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut count = [0u8; 8];
            match guard.try_io(|f| f.get_ref().read(&mut count)) {
                Ok(r) => {
                    // The count is read, so the timer is not readable now: clearing here
                    // saves the EAGAIN read the next call would need to find that out. The
                    // next expiry is a new edge, seen by the reactor after this clear.
                    guard.clear_ready();
                    return r.map(drop);
                }
                // Nothing expired after all (a stale edge): readiness is cleared, wait again.
                Err(_would_block) => continue,
            }
        }
    }

    fn set(&self, spec: libc::itimerspec) -> io::Result<()> {
        // SAFETY: the descriptor is an open timerfd; `spec` is a valid itimerspec and the
        // old-value pointer may be null.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn timespec(d: Duration) -> libc::timespec {
    // SAFETY: timespec is plain integers (with padding on some 32-bit targets); all-zero is
    // valid, and building it this way works whatever the target's extra fields are.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    t.tv_sec = d.as_secs() as _;
    t.tv_nsec = d.subsec_nanos() as _;
    t
}

fn ctl(set: BorrowedFd<'_>, op: i32, fd: i32, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: 0 };
    // SAFETY: `set` is an open epoll descriptor, `fd` an open socket, `ev` a valid event.
    if unsafe { libc::epoll_ctl(set.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rt;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn ready_within(w: &OneShotReadable, ms: u64) -> bool {
        rt_block(async {
            tokio::time::timeout(Duration::from_millis(ms), w.readable())
                .await
                .is_ok_and(|r| r.is_ok())
        })
    }

    // One runtime per test thread, entered for each step.
    thread_local! {
        static RT: tokio::runtime::Runtime = rt();
    }
    fn rt_block<F: std::future::Future>(f: F) -> F::Output {
        RT.with(|rt| rt.block_on(f))
    }

    #[test]
    fn ticker_ticks_while_started_and_not_after_stop() {
        let t = RT.with(|rt| {
            let _g = rt.enter();
            Ticker::new().unwrap()
        });
        let within = |ms| {
            rt_block(async {
                tokio::time::timeout(Duration::from_millis(ms), t.tick())
                    .await
                    .is_ok()
            })
        };
        assert!(!within(20), "stopped ticker must not tick");
        t.start(Duration::from_millis(2)).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..5 {
            assert!(within(2000));
        }
        // Five 2 ms periods: not early (a tick per wake-up, not per poll).
        assert!(start.elapsed() >= Duration::from_millis(8));
        t.stop().unwrap();
        // At most one expiry from before the stop is still reported.
        let _ = within(10);
        assert!(!within(30), "stopped ticker must not tick");
    }

    #[test]
    fn fires_for_data_already_queued_and_for_new_data_but_not_while_disarmed() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = rx.local_addr().unwrap();
        let w = RT.with(|rt| {
            let _g = rt.enter();
            OneShotReadable::new(rx.as_fd()).unwrap()
        });

        assert!(!ready_within(&w, 30), "nothing sent yet");
        tx.send_to(b"a", dest).unwrap();
        assert!(ready_within(&w, 2000), "new datagram");
        // Still queued (nobody read it): re-arming must report it at once.
        assert!(ready_within(&w, 2000), "datagram already queued when armed");
        let mut buf = [0u8; 8];
        rx.recv(&mut buf).unwrap();
        assert!(!ready_within(&w, 30), "queue drained");
        // Arrives after a timed-out wait (armed, not yet consumed) and is seen.
        tx.send_to(b"b", dest).unwrap();
        assert!(ready_within(&w, 2000), "datagram while armed");
    }
}

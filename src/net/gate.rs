//! Reading a camera's TCP socket in batches: [`RecvGate`] sets its receive low-water mark
//! (`SO_RCVLOWAT`), [`LowWater`] decides the mark from the stream's measured rate.
//!
//! The in-process bridge worker reads its camera through retina, which owns the TCP socket
//! and registers it with tokio edge-triggered. Every segment the camera sends then wakes the
//! runtime thread (about 100 a second for a 4 Mbit/s camera, each a context switch, a
//! `readv`, an `EAGAIN` `readv` and a poll of the worker), while the work per wake-up is a
//! few kilobytes. With the mark set to about one frame interval's worth of the stream
//! ([`TICK`]), the kernel queues the data without signalling readability until that much
//! is there, and the reads that follow take everything (a non-blocking read ignores the
//! mark). The thread then wakes about once a frame, and each wake-up is just the socket's:
//! no timer, no `setsockopt` (the mark only moves when the rate does).
//!
//! A mark set for a faster stream than the camera now sends would hold its last bytes back:
//! [`LowWater`] lowers the mark at once when wake-ups come slower than they should, and the
//! reader drops it to 1 (every byte wakes) when nothing came for [`MAX_HOLD`]. The kernel
//! also signals a socket whose buffer or window is about to fill (`tcp_epollin_ready`)
//! whatever the mark, so a fast sender is never stalled.
//!
//! retina does not hand out its socket, so [`RecvGate::find_new`] picks it among the
//! process's descriptors: the one TCP socket connected to the camera's port that was not
//! open before the connection was made. If there is not exactly one (another connection to
//! the same port was opened at the same moment), there is no gate and the worker reads as
//! data comes: a wrong guess could hold back somebody else's socket.

// Wraps syscalls (see the module doc): one of the few modules where `unsafe` may be.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// How much of the stream a wake-up should find: one frame interval at 25 fps. It adds
/// about this much latency before a frame reaches the clients (less for most frames, see
/// [`FILL`]).
pub const TICK: Duration = Duration::from_millis(40);
/// The mark is this fraction of a tick's bytes, so a frame a bit smaller than the average
/// still wakes the reader on its own instead of waiting for the next one.
pub const FILL: f64 = 0.75;
/// The reader drops the mark to 1 when nothing came for this long: the most a stream that
/// slows down abruptly (or stops) can have held back.
pub const MAX_HOLD: Duration = Duration::from_millis(200);
/// The highest mark: 2 s of a 4 Mbit/s camera (the kernel caps it at half of `tcp_rmem`'s
/// maximum anyway).
pub const MAX_MARK: u32 = 1 << 20;
/// Weight of the newest wake-up in the rate estimate: 1/SMOOTHING.
const SMOOTHING: f64 = 4.0;
/// The mark only moves when the wanted one differs by more than 1/HYSTERESIS of it, so a
/// stream whose frames jitter in size does not cost a `setsockopt` a frame.
const HYSTERESIS: u32 = 4;

/// The descriptors open in this process now.
pub fn open_fds() -> BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    let listed: BTreeSet<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing holds the directory's own descriptor, closed now (the `ReadDir` is gone)
    // and likely the very number the next socket gets: leave out what is not open.
    listed
        .into_iter()
        // SAFETY: F_GETFD only reads the descriptor's flags; a closed one gives EBADF.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .collect()
}

/// A TCP socket whose wake-ups can be held back. It does not own the descriptor: its owner
/// must keep the socket open for as long as the gate is used.
#[derive(Debug)]
pub struct RecvGate {
    fd: RawFd,
}

impl RecvGate {
    /// The one TCP socket opened since `before` whose peer port is `peer_port`, if exactly
    /// one is.
    pub fn find_new(before: &BTreeSet<RawFd>, peer_port: u16) -> Option<RecvGate> {
        let mut found = open_fds()
            .into_iter()
            .filter(|fd| !before.contains(fd) && tcp_peer_port(*fd) == Some(peer_port));
        let fd = found.next()?;
        found.next().is_none().then_some(RecvGate { fd })
    }

    /// Readable only once `bytes` are queued (1: every byte, the default). Lowering the
    /// mark under what is queued makes the kernel report the socket readable at once
    /// (`tcp_set_rcvlowat` calls `tcp_data_ready`).
    pub fn set_mark(&self, bytes: u32) -> io::Result<()> {
        let bytes = bytes.clamp(1, i32::MAX as u32) as i32;
        // SAFETY: plain setsockopt on a descriptor the owner keeps open; `bytes` is a c_int.
        let r = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The low-water mark for a camera's socket, from the rate its wake-ups measure. Sans-IO:
/// it sees byte counts and the time, and says when the mark on the socket should change.
#[derive(Debug)]
pub struct LowWater {
    /// The mark the socket has now.
    mark: u32,
    /// Bytes per second, smoothed over wake-ups; `None` until two wake-ups were seen.
    rate: Option<f64>,
    last_wake: Option<Instant>,
}

impl Default for LowWater {
    fn default() -> Self {
        LowWater::new()
    }
}

impl LowWater {
    /// Starts at 1 (every byte wakes) until the stream has been measured.
    pub fn new() -> Self {
        LowWater {
            mark: 1,
            rate: None,
            last_wake: None,
        }
    }

    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// The reader took `bytes` in the wake-up that ended at `now` (it found the socket dry).
    /// Returns the new mark when the socket's should change.
    pub fn after_wake(&mut self, now: Instant, bytes: usize) -> Option<u32> {
        let last = self.last_wake.replace(now)?;
        let gap = now
            .saturating_duration_since(last)
            .max(Duration::from_micros(100));
        let sample = bytes as f64 / gap.as_secs_f64();
        let rate = match self.rate {
            // Wake-ups twice as far apart as they should be: the stream slowed down, and
            // the mark holds its data back. Follow at once rather than over several.
            Some(_) if gap > 2 * TICK => sample,
            Some(r) => r + (sample - r) / SMOOTHING,
            None => sample,
        };
        self.rate = Some(rate);
        let wanted = (rate * TICK.as_secs_f64() * FILL).clamp(1.0, MAX_MARK as f64) as u32;
        self.set(wanted)
    }

    /// Nothing came for [`MAX_HOLD`]: every byte wakes again until the stream has been
    /// measured anew. Returns the new mark when the socket's should change.
    pub fn quiet(&mut self) -> Option<u32> {
        self.rate = None;
        self.last_wake = None;
        (self.mark != 1).then(|| {
            self.mark = 1;
            1
        })
    }

    fn set(&mut self, wanted: u32) -> Option<u32> {
        (wanted.abs_diff(self.mark) > self.mark / HYSTERESIS).then(|| {
            self.mark = wanted;
            wanted
        })
    }
}

/// The peer port of `fd` if it is a connected TCP socket (IPv4 or IPv6).
fn tcp_peer_port(fd: RawFd) -> Option<u16> {
    // SAFETY: `fd` was listed open a moment ago and is only borrowed for these two queries;
    // a descriptor closed meanwhile, or one that is not a socket, makes them fail.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    if sock.r#type().ok()? != socket2::Type::STREAM {
        return None;
    }
    Some(sock.peer_addr().ok()?.as_socket()?.port())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn finds_the_one_new_connection_and_its_reads_still_take_everything() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let before = open_fds();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        // The accepted socket's peer port is the client's, not `port`: only `c` matches.
        let gate = RecvGate::find_new(&before, port).expect("one new socket");
        assert_eq!(gate.fd, c.as_raw_fd());
        gate.set_mark(MAX_MARK).unwrap();
        s.write_all(b"hello").unwrap();
        // Loopback data is queued when write_all returns. Under the mark, the socket is not readable
        // for poll(); a read still takes what is queued.
        let mut pfd = libc::pollfd {
            fd: c.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, 0) },
            0,
            "held: not readable"
        );
        gate.set_mark(1).unwrap();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, 0) },
            1,
            "released: readable"
        );
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.read(&mut buf).unwrap(), 5);
        // Two new connections to the same port: no guess.
        let before = open_fds();
        let _a = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _b = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(RecvGate::find_new(&before, port).is_none());
    }

    /// Bytes per second of a `mbit` Mbit/s stream.
    fn bps(mbit: f64) -> f64 {
        mbit * 1e6 / 8.0
    }

    /// Feeds `wakes` wake-ups of a `mbit` stream to `lw`, each when the socket holds the
    /// mark's worth (a frame every 40 ms while the mark is 1); returns the time after them.
    fn run(lw: &mut LowWater, mut now: Instant, mbit: f64, wakes: usize) -> Instant {
        for _ in 0..wakes {
            let gap = if lw.mark() > 1 {
                Duration::from_secs_f64(lw.mark() as f64 / bps(mbit))
            } else {
                TICK
            };
            now += gap;
            lw.after_wake(now, (bps(mbit) * gap.as_secs_f64()) as usize);
        }
        now
    }

    fn near(mark: u32, want: f64) -> bool {
        (mark as f64) >= want * 0.75 && (mark as f64) <= want * 1.25
    }

    #[test]
    fn the_mark_is_three_quarters_of_a_tick_of_the_stream() {
        let t0 = Instant::now();
        let mut lw = LowWater::new();
        assert_eq!(
            lw.mark(),
            1,
            "every byte wakes until the stream is measured"
        );
        assert_eq!(
            lw.after_wake(t0, 20_000),
            None,
            "one wake-up measures nothing"
        );
        let t = run(&mut lw, t0, 4.0, 40);
        // 4 Mbit/s: 20 000 bytes a tick, the mark 15 000.
        assert!(near(lw.mark(), 15_000.0), "{}", lw.mark());
        // Faster: the mark follows over a few wake-ups.
        let t = run(&mut lw, t, 16.0, 40);
        assert!(near(lw.mark(), 60_000.0), "{}", lw.mark());
        // A huge stream is capped.
        run(&mut lw, t, 2000.0, 40);
        assert_eq!(lw.mark(), MAX_MARK);
    }

    #[test]
    fn a_steady_stream_moves_the_mark_rarely() {
        let t0 = Instant::now();
        let mut lw = LowWater::new();
        let mut now = t0;
        let mut changes = 0;
        // Frames that jitter by a fifth around 20 000 bytes, every 40 ms.
        for i in 0..500u32 {
            now += TICK;
            let bytes = 20_000 + (i % 5) as usize * 2_000 - 4_000;
            changes += usize::from(lw.after_wake(now, bytes).is_some());
        }
        assert!(
            changes <= 3,
            "{changes} setsockopt calls for a steady stream"
        );
        assert!(near(lw.mark(), 15_000.0), "{}", lw.mark());
    }

    #[test]
    fn a_slower_stream_lowers_the_mark_at_once() {
        let t0 = Instant::now();
        let mut lw = LowWater::new();
        let t = run(&mut lw, t0, 8.0, 40);
        assert!(near(lw.mark(), 30_000.0), "{}", lw.mark());
        // The camera drops to 1 Mbit/s: with the 8 Mbit/s mark the next wake-up comes
        // only after 240 ms. That one wake-up is enough to set the mark for the new rate.
        let gap = Duration::from_secs_f64(lw.mark() as f64 / bps(1.0));
        assert!(gap > 2 * TICK);
        let m = lw.after_wake(t + gap, lw.mark() as usize);
        assert!(m.is_some_and(|m| near(m, 3_750.0)), "{m:?}");
    }

    #[test]
    fn quiet_drops_the_mark_to_one_and_measures_again() {
        let t0 = Instant::now();
        let mut lw = LowWater::new();
        let t = run(&mut lw, t0, 4.0, 20);
        assert!(lw.mark() > 1);
        assert_eq!(lw.quiet(), Some(1));
        assert_eq!(lw.quiet(), None, "already 1: no setsockopt");
        // The next wake-up starts a new measurement; the second sets a mark again.
        assert_eq!(lw.after_wake(t + Duration::from_secs(5), 100), None);
        let t = run(&mut lw, t + Duration::from_secs(5), 4.0, 20);
        assert!(near(lw.mark(), 15_000.0), "{} at {t:?}", lw.mark());
    }
}

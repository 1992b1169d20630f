//! [`RecvGate`]: wake-ups of a TCP socket held back with `SO_RCVLOWAT`, let through on a tick.
//!
//! The in-process bridge worker reads its camera through retina, which owns the TCP socket
//! and registers it with tokio edge-triggered. Every segment the camera sends then wakes the
//! runtime thread (about 100 a second for a 4 Mbit/s camera, each a context switch, a
//! `readv`, an `EAGAIN` `readv` and a poll of the worker), while the work per wake-up is a
//! few kilobytes. With the socket's receive low-water mark set high, the kernel queues the
//! data without signalling readability ([`RecvGate::hold`]). On its tick the worker lowers
//! the mark to 1 ([`RecvGate::release`]): that makes the kernel signal `EPOLLIN` at once if
//! anything is queued (`tcp_set_rcvlowat` calls `tcp_data_ready`), and the reads that
//! follow take everything (a non-blocking read ignores the mark). Once the reader has found
//! the socket dry (`EAGAIN`) it holds it again. The thread then wakes once a tick instead of
//! once a segment.
//!
//! The kernel still signals a held socket whose buffer or window is about to fill
//! (`tcp_epollin_ready`), so holding never stalls a fast sender; and [`HOLD_BYTES`] is far
//! above what a camera sends in one tick.
//!
//! retina does not hand out its socket, so [`RecvGate::find_new`] picks it among the
//! process's descriptors: the one TCP socket connected to the camera's port that was not
//! open before the connection was made. If there is not exactly one (another connection to
//! the same port was opened at the same moment), there is no gate and the worker reads as
//! before: a wrong guess could hold back somebody else's socket.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// The low-water mark while held: 1 MiB, 2 s of a 4 Mbit/s camera (the kernel caps it at
/// half of `tcp_rmem`'s maximum).
pub const HOLD_BYTES: i32 = 1 << 20;

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

    /// Hold back readability until `HOLD_BYTES` are queued.
    pub fn hold(&self) -> io::Result<()> {
        self.set_lowat(HOLD_BYTES)
    }

    /// Back to the default, every byte wakes; the reactor sees the socket readable now if
    /// data waits.
    pub fn release(&self) -> io::Result<()> {
        self.set_lowat(1)
    }

    fn set_lowat(&self, bytes: i32) -> io::Result<()> {
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
        gate.hold().unwrap();
        s.write_all(b"hello").unwrap();
        // Loopback data is queued when write_all returns. Held, the socket is not readable
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
        gate.release().unwrap();
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
}

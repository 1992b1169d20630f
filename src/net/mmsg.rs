//! Batched datagram I/O: `recvmmsg`, and `sendmsg` with UDP GSO or `sendmmsg`, through libc.
//!
//! A syscall costs more than everything else quoll does with a 1316-byte datagram, so the
//! packet path moves datagrams in batches: one `recvmmsg` drains whatever the input socket
//! holds, one send call carries every chunk an output has ready.
//!
//! The `mmsghdr`/`iovec` arrays are allocated once and their pointers are written again right
//! before each call, from borrows that outlive the call, so no pointer is ever used stale.
//! Field types of `msghdr` differ between C libraries and targets (`msg_iovlen` is `size_t`
//! on glibc, `c_int` on musl), hence the `as _` casts.

// Wraps syscalls (see the module doc): one of the few modules where `unsafe` may be.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

/// Largest UDP payload: anything we receive fits, so nothing is silently truncated.
pub const MAX_DATAGRAM: usize = 65_536;

/// Datagrams per syscall, and what one busy input tick aims to carry (`input::cadence`); a
/// backlog after a scheduling hiccup takes a few calls, with the outputs running in between.
pub const BATCH: usize = 32;

/// An all-zero `mmsghdr`: null pointers and zero lengths, which the kernel accepts as "no
/// name, no data".
fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all-zero is valid.
    unsafe { mem::zeroed() }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers; all-zero is valid
    // (family AF_UNSPEC).
    unsafe { mem::zeroed() }
}

/// Receive buffers for up to `capacity` datagrams per `recvmmsg`.
///
/// The buffers are `capacity` x 64 KiB of address space, but they are zero pages from the
/// allocator (calloc/mmap) and only the bytes the kernel writes become resident: 32 slots of
/// 1316-byte datagrams touch 32 pages, not 2 MiB.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    filled: usize,
}

impl RecvBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, BATCH);
        RecvBatch {
            bufs: vec![0u8; capacity * MAX_DATAGRAM].into_boxed_slice(),
            addrs: vec![zeroed_storage(); capacity].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                capacity
            ]
            .into_boxed_slice(),
            msgs: (0..capacity).map(|_| zeroed_mmsghdr()).collect(),
            filled: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// How many datagrams the last successful [`recv`](Self::recv) stored.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// One non-blocking `recvmmsg`: `Ok(n)` with 1 ≤ n ≤ capacity datagrams stored, or the
    /// error (`WouldBlock` when the socket holds nothing). Forgets the previous batch.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.filled = 0;
        let bufs = self.bufs.chunks_exact_mut(MAX_DATAGRAM);
        for (((msg, iov), addr), buf) in self
            .msgs
            .iter_mut()
            .zip(self.iovs.iter_mut())
            .zip(self.addrs.iter_mut())
            .zip(bufs)
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
            point(
                msg,
                (addr as *mut libc::sockaddr_storage).cast(),
                mem::size_of::<libc::sockaddr_storage>(),
                iov,
                1,
            );
        }
        // SAFETY: every msg points at its own iovec, address slot and 64 KiB buffer, all
        // owned by `self` and exclusively borrowed for this call; the lengths given are
        // theirs. `fd` is a valid open socket for the duration of the borrow.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                self.msgs.len() as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Datagram `i` of the last batch and its source address (None for a family we do not
    /// speak, which an IP socket never reports).
    pub fn get(&self, i: usize) -> (&[u8], Option<IpAddr>) {
        assert!(
            i < self.filled,
            "datagram {i} of a batch of {}",
            self.filled
        );
        let msg = &self.msgs[i];
        // A UDP payload fits the 64 KiB buffer; min() keeps a bogus length from panicking.
        let len = (msg.msg_len as usize).min(MAX_DATAGRAM);
        let data = &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len];
        (
            data,
            sockaddr_ip(&self.addrs[i], msg.msg_hdr.msg_namelen as usize),
        )
    }
}

/// The IP address in a socket address the kernel filled in (v4-mapped v6 made canonical, as
/// `allowed_sources` are).
pub fn sockaddr_ip(addr: &libc::sockaddr_storage, len: usize) -> Option<IpAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr type,
            // and the family says this one is a sockaddr_in.
            let sin =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)).to_canonical())
        }
        _ => None,
    }
}

/// Sends for one destination: up to [`BATCH`] datagrams per call, each one payload slice,
/// optionally preceded by a small header (RTP), gathered without copying.
///
/// Where the kernel has UDP GSO (Linux 4.18+, probed once), a run of equal-sized datagrams
/// goes out as one `sendmsg` with `UDP_SEGMENT`: the kernel builds one buffer and cuts it
/// into the same datagrams on the wire, instead of one socket-buffer allocation, route and
/// receiver wake-up per datagram. Anything else, and every send after the kernel or the
/// device has refused GSO once, goes through `sendmmsg`.
pub struct SendBatch {
    dest: SockAddr,
    gso: bool,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

/// Most bytes one GSO send may carry: the IPv4 total length is 16 bits, less headers.
const GSO_MAX_BYTES: usize = 65_000;

impl SendBatch {
    /// State for sending to `dest` through `socket` (probed for GSO support).
    pub fn new(dest: SocketAddr, socket: BorrowedFd<'_>) -> Self {
        SendBatch {
            dest: SockAddr::from(dest),
            gso: gso_supported(socket),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                2 * BATCH
            ]
            .into_boxed_slice(),
            msgs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Whether sends still try GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Non-blocking send of `payloads[i]`, each after `headers[i]` when headers are given
    /// (there must be as many). `Ok(n)`: the first n went out (n ≥ 1; a short count means
    /// the next one failed, and sending it again reports why). At most [`BATCH`] per call;
    /// the rest is the caller's next call.
    pub fn send<H: AsRef<[u8]>>(
        &mut self,
        fd: BorrowedFd<'_>,
        payloads: &[&[u8]],
        headers: Option<&[H]>,
    ) -> io::Result<usize> {
        let n = payloads.len().min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        if let Some(h) = headers {
            assert!(h.len() >= n, "{} headers for {n} payloads", h.len());
        }
        let header_len = |i: usize| headers.map_or(0, |h| h[i].as_ref().len());
        if self.gso {
            let run = gso_run((0..n).map(|i| header_len(i) + payloads[i].len()));
            if run >= 2 {
                let seg = header_len(0) + payloads[0].len();
                match self.send_gso(fd, &payloads[..run], headers, seg) {
                    Ok(()) => return Ok(run),
                    // The kernel or the device cannot do it (no checksum offload gives EIO):
                    // nothing was sent; stop trying and send these the plain way.
                    Err(e) if gso_refused(&e) => self.gso = false,
                    Err(e) => return Err(e),
                }
            }
        }
        self.send_mmsg(fd, &payloads[..n], headers)
    }

    fn send_gso<H: AsRef<[u8]>>(
        &mut self,
        fd: BorrowedFd<'_>,
        payloads: &[&[u8]],
        headers: Option<&[H]>,
        seg: usize,
    ) -> io::Result<()> {
        let mut used = 0;
        for (i, payload) in payloads.iter().enumerate() {
            if let Some(h) = headers {
                self.iovs[used] = iovec(h[i].as_ref());
                used += 1;
            }
            self.iovs[used] = iovec(payload);
            used += 1;
        }
        // Room for one cmsghdr and a u16, aligned like cmsghdr (u64 alignment suffices).
        let mut control = [0u64; 4];
        // SAFETY: all-zero is a valid msghdr (see zeroed_mmsghdr).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = self.dest.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = self.dest.len() as _;
        msg.msg_iov = self.iovs.as_mut_ptr();
        msg.msg_iovlen = used as _;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as _) } as usize;
        debug_assert!(space <= mem::size_of_val(&control));
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, which is large and aligned enough for one
        // cmsghdr with a u16 (checked above), so CMSG_FIRSTHDR is non-null and CMSG_DATA
        // points inside `control`; the u16 write is unaligned-safe.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as _) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
        }
        // SAFETY: `msg` points at iovecs owned by `self` that point at `payloads` and
        // `headers` (lent for this call), at `self.dest` and at `control`; the kernel only
        // reads them. `fd` is a valid open socket for the duration of the borrow.
        let r = unsafe {
            libc::sendmsg(
                fd.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn send_mmsg<H: AsRef<[u8]>>(
        &mut self,
        fd: BorrowedFd<'_>,
        payloads: &[&[u8]],
        headers: Option<&[H]>,
    ) -> io::Result<usize> {
        let n = payloads.len();
        let per = if headers.is_some() { 2 } else { 1 };
        for (i, (msg, iovs)) in self
            .msgs
            .iter_mut()
            .zip(self.iovs.chunks_exact_mut(2))
            .take(n)
            .enumerate()
        {
            let payload = payloads[i];
            let (first, rest) = iovs.split_at_mut(1);
            match headers {
                Some(h) => {
                    first[0] = iovec(h[i].as_ref());
                    rest[0] = iovec(payload);
                }
                None => first[0] = iovec(payload),
            }
            // The kernel takes a non-const name pointer but never writes through it on send.
            point(
                msg,
                self.dest.as_ptr() as *mut libc::c_void,
                self.dest.len() as usize,
                iovs.as_mut_ptr(),
                per,
            );
        }
        // SAFETY: the first n msgs point at iovecs owned by `self` that point at `payloads`
        // and `headers`, which the caller lends for this call, and at `self.dest`; the kernel
        // only reads them. `fd` is a valid open socket for the duration of the borrow.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as _,
                (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as _,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// How many datagrams from the start, of these lengths, one GSO send can carry: all of the
/// first one's length, then at most one shorter (the kernel cuts at the segment size, so only
/// the last segment may be short), within [`GSO_MAX_BYTES`].
pub fn gso_run(lens: impl IntoIterator<Item = usize>) -> usize {
    let mut lens = lens.into_iter();
    let Some(seg) = lens.next() else { return 0 };
    if seg == 0 {
        return 1;
    }
    let (mut run, mut bytes) = (1, seg);
    for len in lens {
        if len == 0 || len > seg || bytes + len > GSO_MAX_BYTES {
            break;
        }
        run += 1;
        bytes += len;
        if len < seg {
            break;
        }
    }
    run
}

/// Whether a GSO send failed because GSO cannot be used here (rather than, say, a full
/// buffer): then nothing was sent and plain sends will do.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Whether the kernel knows UDP GSO: it answers `getsockopt(UDP_SEGMENT)` only if it does.
/// Older kernels would ignore the cmsg and send one huge datagram, so this must be asked.
fn gso_supported(socket: BorrowedFd<'_>) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val`/`len` are a valid buffer and its length; `socket` is an open socket.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Aim `msg` at an address slot (`name`, `namelen` bytes) and `iovlen` iovecs from `iov`,
/// with no control data and its flags and length cleared: the one way a header is filled
/// for `recvmmsg` and for `sendmmsg`. Only stores pointers; the callers' SAFETY comments
/// say why what they point at outlives the call.
fn point(
    msg: &mut libc::mmsghdr,
    name: *mut libc::c_void,
    namelen: usize,
    iov: *mut libc::iovec,
    iovlen: usize,
) {
    msg.msg_hdr.msg_name = name;
    msg.msg_hdr.msg_namelen = namelen as _;
    msg.msg_hdr.msg_iov = iov;
    msg.msg_hdr.msg_iovlen = iovlen as _;
    msg.msg_hdr.msg_control = std::ptr::null_mut();
    msg.msg_hdr.msg_controllen = 0 as _;
    msg.msg_hdr.msg_flags = 0;
    msg.msg_len = 0;
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        (rx, tx)
    }

    /// recvmmsg until `want` datagrams arrived (loopback delivery is quick but not instant).
    fn recv_all(rx: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, IpAddr)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            match batch.recv(rx.as_fd()) {
                Ok(n) => {
                    assert!(n <= batch.capacity());
                    for i in 0..n {
                        let (d, from) = batch.get(i);
                        got.push((d.to_vec(), from.unwrap()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        got
    }

    #[test]
    fn empty_socket_would_block() {
        let (rx, _tx) = pair();
        let mut b = RecvBatch::new(4);
        let e = b.recv(rx.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(b.is_empty());
    }

    #[test]
    fn batch_carries_lengths_sources_and_order_and_stops_at_capacity() {
        let (rx, tx) = pair();
        let dest = rx.local_addr().unwrap();
        for i in 0..7u8 {
            // Different lengths, one of them larger than a TS chunk, one empty.
            let d = vec![i; usize::from(i) * 300];
            tx.send_to(&d, dest).unwrap();
        }
        let mut b = RecvBatch::new(3);
        let got = recv_all(&rx, &mut b, 7);
        assert_eq!(got.len(), 7);
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d.len(), i * 300);
            assert!(d.iter().all(|&x| usize::from(x) == i));
            assert_eq!(*from, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        assert!(b.len() <= 3);
    }

    #[test]
    fn largest_datagram_is_not_truncated() {
        let (rx, tx) = pair();
        let big = vec![0xA5u8; 65_507];
        tx.send_to(&big, rx.local_addr().unwrap()).unwrap();
        let got = recv_all(&rx, &mut RecvBatch::new(2), 1);
        assert_eq!(got[0].0, big);
    }

    #[test]
    fn sendmmsg_sends_each_payload_with_its_header() {
        let (rx, tx) = pair();
        let mut s = SendBatch::new(rx.local_addr().unwrap(), tx.as_fd());
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let headers: Vec<[u8; 2]> = (0..5u8).map(|i| [0xEE, i]).collect();
        assert_eq!(s.send(tx.as_fd(), &slices, Some(&headers)).unwrap(), 5);
        assert_eq!(
            s.send::<[u8; 2]>(tx.as_fd(), &slices[..2], None).unwrap(),
            2
        );
        let got = recv_all(&rx, &mut RecvBatch::new(BATCH), 7);
        assert_eq!(got.len(), 7);
        for (i, (d, _)) in got[..5].iter().enumerate() {
            assert_eq!(&d[..2], &[0xEE, i as u8]);
            assert_eq!(&d[2..], payloads[i].as_slice());
        }
        assert_eq!(got[5].0, payloads[0]);
        assert_eq!(got[6].0, payloads[1]);
    }

    #[test]
    fn sendmmsg_caps_one_call_at_batch() {
        let (rx, tx) = pair();
        let mut s = SendBatch::new(rx.local_addr().unwrap(), tx.as_fd());
        let one = [0x47u8; 188];
        let many = [&one[..]; BATCH + 5];
        assert_eq!(s.send::<[u8; 0]>(tx.as_fd(), &many, None).unwrap(), BATCH);
        assert_eq!(s.send::<[u8; 0]>(tx.as_fd(), &[], None).unwrap(), 0);
    }

    #[test]
    fn gso_and_plain_sends_deliver_the_same_datagrams() {
        let (rx, tx) = pair();
        let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(4 << 20);
        let mut s = SendBatch::new(rx.local_addr().unwrap(), tx.as_fd());
        // Full 1316-byte chunks, then a short one, then full again: two GSO runs (where
        // supported) of 3 and 2, and the same datagrams either way.
        let lens = [1316, 1316, 1316, 188 * 3, 1316, 1316];
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| vec![i as u8; l])
            .collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let headers: Vec<[u8; 12]> = (0..6u8).map(|i| [i; 12]).collect();
        for with_headers in [false, true] {
            let mut at = 0;
            while at < slices.len() {
                let h = with_headers.then(|| &headers[at..]);
                at += s.send(tx.as_fd(), &slices[at..], h).unwrap();
            }
            let got = recv_all(&rx, &mut RecvBatch::new(BATCH), 6);
            assert_eq!(got.len(), 6, "gso {}", s.gso());
            for (i, (d, _)) in got.iter().enumerate() {
                let body = if with_headers {
                    assert_eq!(&d[..12], &headers[i]);
                    &d[12..]
                } else {
                    &d[..]
                };
                assert_eq!(body, payloads[i].as_slice(), "datagram {i}");
            }
        }
    }

    #[test]
    fn gso_run_takes_equal_sizes_and_one_short_tail() {
        assert_eq!(gso_run([]), 0);
        assert_eq!(gso_run([1316]), 1);
        assert_eq!(gso_run([1316, 1316, 1316]), 3);
        assert_eq!(
            gso_run([1316, 1316, 564, 1316]),
            3,
            "a short one ends the run"
        );
        assert_eq!(gso_run([1316, 1328]), 1, "a longer one cannot follow");
        assert_eq!(gso_run([564, 564, 188]), 3);
        assert_eq!(gso_run([1316, 0, 1316]), 1, "empty datagrams go alone");
        assert_eq!(gso_run([0, 0]), 1);
        assert_eq!(gso_run([1328; 64]), GSO_MAX_BYTES / 1328);
    }

    #[test]
    fn ipv6_sources_are_reported_canonical() {
        let Ok(rx) = UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        rx.set_nonblocking(true).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A dual-stack socket sees IPv4 senders as ::ffff:127.0.0.1.
        if tx.send_to(b"x", ("127.0.0.1", port)).is_err() {
            return;
        }
        let got = recv_all(&rx, &mut RecvBatch::new(1), 1);
        if let Some((_, from)) = got.first() {
            assert_eq!(*from, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    }

    #[test]
    fn sockaddr_ip_reads_v4_and_v6_and_rejects_short_or_unknown() {
        let v4: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:1".parse().unwrap();
        for (sa, want) in [
            (v4, v4.ip()),
            (v6, v6.ip()),
            (mapped, "10.1.2.3".parse().unwrap()),
        ] {
            let s = SockAddr::from(sa);
            let len = s.len() as usize;
            let storage = s.as_storage();
            assert_eq!(sockaddr_ip(&storage, len), Some(want));
            assert_eq!(sockaddr_ip(&storage, 2), None, "truncated address");
        }
        assert_eq!(sockaddr_ip(&zeroed_storage(), 128), None);
    }
}

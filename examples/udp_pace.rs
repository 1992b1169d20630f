//! Paced UDP sender and counting receiver, used by `scripts/bench-udp.sh`.
//!
//! ```text
//! udp_pace send FILE DEST RATE_MBIT SECONDS [DATAGRAM_BYTES]
//!     Sends FILE (looped) to DEST as datagrams of DATAGRAM_BYTES (default 1316 = 7 TS
//!     packets) at exactly RATE_MBIT Mbit/s of UDP payload for SECONDS, then prints
//!     `sent packets=N bytes=B secs=S mbit=R`.
//! udp_pace recv IDLE_MS MAX_SECS ADDR...
//!     Binds every ADDR, prints `ready`, counts datagrams until IDLE_MS pass without one
//!     (after the first) or MAX_SECS in all, then prints one
//!     `recv addr=A packets=N bytes=B` line per ADDR.
//! udp_pace send --stamp … / udp_pace recv --stamp …
//!     The sender writes its wall clock (ns since the Unix epoch, big-endian) into the last 8
//!     bytes of each datagram (the payload of its last TS packet); the receiver, on the same
//!     host, adds `lat_p50_us=… lat_p99_us=… lat_max_us=…` to its line: the one-way latency
//!     through whatever sits in between.
//! ```
//!
//! Pacing is by bytes: datagram i leaves no earlier than start + bytes_before_i * 8 / rate,
//! so the average rate is exact whatever the sleep granularity (late wake-ups send a small
//! burst to catch up).

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

const SOCKET_BUFFER: usize = 8 << 20;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let stamp = args.iter().any(|a| a == "--stamp");
    args.retain(|a| a != "--stamp");
    let result = match args.first().map(String::as_str) {
        Some("send") if args.len() == 5 || args.len() == 6 => send(&args[1..], stamp),
        Some("recv") if args.len() >= 4 => recv(&args[1..], stamp),
        _ => Err(
            "usage: udp_pace send FILE DEST RATE_MBIT SECONDS [DATAGRAM_BYTES]\n       \
             udp_pace recv IDLE_MS MAX_SECS ADDR..."
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_pace: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s}"))
}

fn udp_socket(addr: SocketAddr) -> Result<Socket, String> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("socket: {e}"))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    Ok(sock)
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn send(args: &[String], stamp: bool) -> Result<(), String> {
    let data = std::fs::read(&args[0]).map_err(|e| format!("{}: {e}", args[0]))?;
    let dest: SocketAddr = parse("DEST", &args[1])?;
    let rate_mbit: f64 = parse("RATE_MBIT", &args[2])?;
    let seconds: f64 = parse("SECONDS", &args[3])?;
    let size: usize = match args.get(4) {
        Some(s) => parse("DATAGRAM_BYTES", s)?,
        None => 1316,
    };
    if data.len() < size || size == 0 || rate_mbit <= 0.0 || seconds <= 0.0 {
        return Err("need a FILE of at least one datagram, RATE_MBIT > 0, SECONDS > 0".into());
    }
    // Whole datagrams only: the tail of the file that does not fill one is not sent.
    let chunks: Vec<&[u8]> = data.chunks_exact(size).collect();
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = udp_socket(bind)?;
    sock.bind(&bind.into()).map_err(|e| format!("bind: {e}"))?;
    sock.connect(&dest.into())
        .map_err(|e| format!("connect {dest}: {e}"))?;
    let sock: UdpSocket = sock.into();

    let ns_per_byte = 8_000.0 / rate_mbit; // 8 bits / (rate_mbit * 1e6 bit/s) in ns
    let end = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut i = 0usize;
    let mut stamped = vec![0u8; size];
    loop {
        let due = Duration::from_nanos((bytes as f64 * ns_per_byte) as u64);
        if due >= end {
            break;
        }
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut chunk = chunks[i];
        i = (i + 1) % chunks.len();
        if stamp {
            stamped.copy_from_slice(chunk);
            stamped[size - 8..].copy_from_slice(&wall_ns().to_be_bytes());
            chunk = &stamped;
        }
        match sock.send(chunk) {
            Ok(_) => {}
            // e.g. ECONNREFUSED from an ICMP of an earlier datagram: count and go on.
            Err(_) => errors += 1,
        }
        packets += 1;
        bytes += chunk.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent packets={packets} bytes={bytes} secs={secs:.3} mbit={:.3} send_errors={errors}",
        bytes as f64 * 8.0 / secs / 1e6
    );
    Ok(())
}

fn recv(args: &[String], stamp: bool) -> Result<(), String> {
    let idle = Duration::from_millis(parse("IDLE_MS", &args[0])?);
    let max = Duration::from_secs_f64(parse("MAX_SECS", &args[1])?);
    let mut socks = Vec::new();
    for a in &args[2..] {
        let addr: SocketAddr = parse("ADDR", a)?;
        let sock = udp_socket(addr)?;
        sock.bind(&addr.into())
            .map_err(|e| format!("bind {addr}: {e}"))?;
        let sock: UdpSocket = sock.into();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| format!("timeout: {e}"))?;
        socks.push((a.clone(), sock));
    }
    println!("ready");
    let start = Instant::now();
    let threads: Vec<_> = socks
        .into_iter()
        .map(|(name, sock)| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let (mut packets, mut bytes) = (0u64, 0u64);
                let mut last: Option<Instant> = None;
                let mut lat_us: Vec<u64> = Vec::new();
                loop {
                    match sock.recv(&mut buf) {
                        Ok(n) => {
                            if stamp && n >= 8 {
                                let sent = u64::from_be_bytes(buf[n - 8..n].try_into().unwrap());
                                lat_us.push(wall_ns().saturating_sub(sent) / 1000);
                            }
                            packets += 1;
                            bytes += n as u64;
                            last = Some(Instant::now());
                        }
                        Err(_) => {
                            if last.is_some_and(|t| t.elapsed() >= idle) {
                                break;
                            }
                        }
                    }
                    if start.elapsed() >= max {
                        break;
                    }
                }
                (name, packets, bytes, lat_us)
            })
        })
        .collect();
    for t in threads {
        let (name, packets, bytes, mut lat) = t.join().map_err(|_| "receiver thread panicked")?;
        let mut line = format!("recv addr={name} packets={packets} bytes={bytes}");
        if !lat.is_empty() {
            lat.sort_unstable();
            let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
            line += &format!(
                " lat_p50_us={} lat_p99_us={} lat_max_us={}",
                at(0.5),
                at(0.99),
                lat[lat.len() - 1]
            );
        }
        println!("{line}");
    }
    Ok(())
}

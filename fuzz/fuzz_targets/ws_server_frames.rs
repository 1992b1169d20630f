//! Arbitrary bytes from a WebSocket client, read by the server side with the bridge's
//! limits (`quoll::bridge::ws::ws_config`): errors, never a panic or an unbounded buffer.
#![no_main]

use std::io::{Cursor, Read, Write};

use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Role, WebSocket};

/// Reads the fuzz input, swallows writes.
struct Pipe(Cursor<Vec<u8>>);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ws = WebSocket::from_raw_socket(
        Pipe(Cursor::new(data.to_vec())),
        Role::Server,
        Some(quoll::bridge::ws::ws_config()),
    );
    for _ in 0..64 {
        if ws.read().is_err() {
            break;
        }
    }
});

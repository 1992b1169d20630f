//! WebSocket viewers for benchmarks: opens N connections to a bridge stream, reads and
//! discards for S seconds, then prints `clients bytes min_bytes max_bytes`.
//!
//!     cargo run --release --example ws_sink -- ws://127.0.0.1:8080/ws/stream/cam 10 20

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: ws_sink URL [CLIENTS] [SECONDS]");
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let host = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("ws://host:port/...")
            .to_owned();
        let counts: Vec<Rc<Cell<u64>>> = (0..clients).map(|_| Rc::default()).collect();
        for c in &counts {
            let stream = tokio::net::TcpStream::connect(&host)
                .await
                .expect("connect");
            let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
                .await
                .expect("handshake");
            let c = c.clone();
            tokio::task::spawn_local(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Binary(d) = m {
                        c.set(c.get() + d.len() as u64);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let v: Vec<u64> = counts.iter().map(|c| c.get()).collect();
        println!(
            "{} {} {} {}",
            clients,
            v.iter().sum::<u64>(),
            v.iter().min().copied().unwrap_or(0),
            v.iter().max().copied().unwrap_or(0)
        );
    });
}

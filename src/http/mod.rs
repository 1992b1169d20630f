//! The local HTTP API: a small HTTP/1.1 server on the runtime thread, bound to loopback
//! unless the config says otherwise. Who may use it is `access.rs` (with the checks of
//! `guard.rs` and the token files of `token.rs`); docs/security.md is the operator's view.

pub mod access;
pub mod api;
pub mod guard;
mod limits;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::net::listener::{self, Listener};
use crate::node::Node;
pub use access::Access;

/// Bind the API listener (a failure here is fatal at start: the operator asked for it).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve connections until the task is dropped. The listener caps connections and waits
/// out accept errors (`net::listener`); each connection gets the header and idle timeouts.
pub async fn serve(mut listener: Listener, node: Rc<Node>, access: Rc<Access>) {
    let limits = listener.limits();
    loop {
        let conn = listener.accept().await;
        let (peer, idle) = (conn.peer, conn.idle.clone());
        let node = node.clone();
        let access = access.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| {
                let node = node.clone();
                let access = access.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(&node, &access, req).await) }
            });
            let served = http1::Builder::new()
                .keep_alive(true)
                // header_read_timeout needs a timer (hyper panics without one).
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(conn.stream), service)
                // The bridge's WebSocket route takes the connection over.
                .with_upgrades();
            match listener::until_idle(idle, served).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "api connection ended: {e}"),
                Err(()) => tracing::debug!(%peer, "api connection closed: idle"),
            }
        });
    }
}

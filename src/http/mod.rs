//! The local HTTP API: a small HTTP/1.1 server on the runtime thread, bound to loopback
//! unless the config says otherwise. Who may use it is `access.rs` (with the checks of
//! `guard.rs` and the token files of `token.rs`); docs/security.md is the operator's view.

pub mod access;
pub mod api;
pub mod guard;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::node::Node;
pub use access::Access;

/// Bind the API listener (a failure here is fatal at start: the operator asked for it).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve connections until the task is dropped.
pub async fn serve(listener: TcpListener, node: Rc<Node>, access: Rc<Access>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: log, let the moment pass, go on.
                tracing::warn!("api accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        let access = access.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| {
                let node = node.clone();
                let access = access.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(&node, &access, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                // The bridge's WebSocket route takes the connection over.
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, "api connection ended: {e}");
            }
        });
    }
}

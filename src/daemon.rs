//! `quoll run`: the one-thread runtime, startup in a fixed order (config, events, flows,
//! API), and a clean stop on SIGTERM/SIGINT (flows stopped, events flushed).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, Config};
use crate::events::Events;
use crate::node::Node;

/// How many events the memory-only event store keeps.
const EVENTS_IN_MEMORY: usize = 10_000;

pub fn run(config_path: Option<PathBuf>) -> ExitCode {
    init_logging();
    let config = match load(config_path.as_deref()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("quoll: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quoll: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config, config_path))
}

fn load(path: Option<&Path>) -> Result<Config, String> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            config::EMBEDDED_DEFAULT.to_owned(),
            "embedded default config".to_owned(),
        ),
    };
    config::parse(&text).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!("{origin} is invalid:\n{}", list.join("\n"))
    })
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> ExitCode {
    // Signals first: a SIGTERM that lands during startup must still stop us cleanly.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("quoll: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api_addr = match config.server.listen_addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, config.server.listen_port),
        Err(_) => {
            eprintln!(
                "quoll: server.listen_addr {:?} is not an IP address",
                config.server.listen_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let listener = match crate::http::bind(api_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("quoll: cannot bind the local API on {api_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let events = Events::in_memory(EVENTS_IN_MEMORY);
    let node = Node::start(config, config_path, events).await;
    let (active, total) = {
        let h = node.health().await;
        (h.active_flows, h.total_flows)
    };
    let api = tokio::task::spawn_local(crate::http::serve(listener, node.clone()));
    let manager = start_manager(&node);
    tracing::info!(api = %api_addr, active_flows = active, total_flows = total, "quoll ready");

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    api.abort();
    for task in manager {
        task.abort();
    }
    node.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The manager link, when the config has an enabled `manager` block. Its events come from
/// the memory-only adapter until the durable queue lands (health then says `degraded`).
fn start_manager(node: &std::rc::Rc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(cfg) = node.manager_config().filter(|m| m.enabled) else {
        return Vec::new();
    };
    let (feed, watch) = crate::manager::MemoryFeed::new(node.events.clone());
    let node = node.clone();
    let link = async move {
        if let Err(e) = crate::manager::run(node, cfg, feed, false).await {
            tracing::error!("manager link not started: {e}");
        }
    };
    vec![
        tokio::task::spawn_local(watch),
        tokio::task::spawn_local(link),
    ]
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("QUOLL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

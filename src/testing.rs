//! Helpers shared by the unit tests of several modules (compiled for tests only).

pub mod netsim;

/// Everything logged while `f` runs on this thread, debug level included.
pub fn capture_logs(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || Buf(sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// A current-thread runtime with I/O and time, for tests that drive async code.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Fake time for the state machines' tests: `t(ms)` is `ms` milliseconds after an origin
/// fixed when the clock is made. The machines never read the clock themselves, so a test
/// states every instant it hands them.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub std::time::Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(std::time::Instant::now())
    }

    pub fn t(&self, ms: u64) -> std::time::Instant {
        self.0 + std::time::Duration::from_millis(ms)
    }
}

//! The RTSP->WebSocket bridge: on-demand sessions that pull a camera (or read a flow) and
//! fan MPEG-TS out to browser WebSocket clients.

pub mod lifecycle;

#[cfg(test)]
mod tests;

//! MPEG-TS: packet views, datagram chunking, continuity and PSI analysis, and the flow ring.

pub mod analyzer;
pub mod chunk;
pub mod continuity;
pub mod mux;
pub mod packet;
pub mod psi;
pub mod ring;
pub mod synth;

#[cfg(test)]
mod props;

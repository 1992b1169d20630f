//! MPEG-TS: packet views, datagram chunking, continuity and PSI analysis, and the flow ring.

pub mod analyzer;
pub mod chunk;
pub mod packet;
pub mod ring;

//! Flow outputs: where packets leave Quoll.

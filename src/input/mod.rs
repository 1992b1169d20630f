//! Flow inputs: where packets enter Quoll.

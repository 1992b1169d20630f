//! Flows: one input fanned out to N outputs over a ring, and the manager that runs them.

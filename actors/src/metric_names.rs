//! Every metric the node emits, named in one place (documented in the README).
//!
//! Names follow Prometheus conventions: `ire_` prefix, base units, `_total` for counters.

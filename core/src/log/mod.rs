//! The memory-mapped, append-only sequence log (under construction: see the
//! open log issue). Nothing here is usable yet.

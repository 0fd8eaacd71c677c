//! The broadcast ring (under construction).

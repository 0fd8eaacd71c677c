//! Herald's core: the lock-free broadcast [`ring`], the append-only sequence
//! [`log`], and the [`broker`] that joins them; [`json`] is the JSON toolkit
//! they and the server share.
//!
//! No network code lives here. See `docs/ARCHITECTURE.md` for how the parts
//! fit together.

pub mod broker;
/// Entry points for fuzz targets, not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod log;
pub mod ring;

mod sync;

pub use broker::{
    Broker, BrokerConfig, BrokerError, Delivery, Event, Filter, StartAt, Subscription,
};
pub use ring::{Ring, RingConfig};

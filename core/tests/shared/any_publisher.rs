//! Either kind of ring publisher, so that a test with one publisher checks
//! both the shared claim (compare-and-swap) and the single publisher's (a
//! store). Included by path (`#[path = "shared/any_publisher.rs"]`) in the
//! ring model and the loom models; each uses part of it.
#![allow(dead_code)]

use herald_core::ring::{
    Claim, PublishError, Publisher, Ring, RingConfig, SinglePublisher, WaitStrategy,
};

pub(crate) enum AnyPublisher {
    Shared(Publisher),
    Single(SinglePublisher),
}

impl AnyPublisher {
    pub(crate) fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        match self {
            Self::Shared(p) => p.try_claim(len),
            Self::Single(p) => p.try_claim(len),
        }
    }

    pub(crate) fn try_publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        match self {
            Self::Shared(p) => p.try_publish(payload),
            Self::Single(p) => p.try_publish(payload),
        }
    }

    /// Claims `len` bytes, waiting for room as the publisher's strategy says.
    pub(crate) fn claim(&mut self, len: usize) -> Claim<'_> {
        match self {
            Self::Shared(p) => p.claim(len),
            Self::Single(p) => p.claim(len),
        }
        .unwrap()
    }

    pub(crate) fn skip_to(&mut self, seq: u64) {
        match self {
            Self::Shared(p) => p.skip_to(seq),
            Self::Single(p) => p.skip_to(seq),
        }
    }

    pub(crate) fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        match self {
            Self::Shared(p) => p.set_wait_strategy(wait),
            Self::Single(p) => p.set_wait_strategy(wait),
        }
    }
}

/// A ring and its one publisher: a shared one, or the single publisher.
pub(crate) fn ring_with_publisher(config: RingConfig, single: bool) -> (Ring, AnyPublisher) {
    if single {
        let (ring, publisher) = Ring::with_single_publisher(config).unwrap();
        (ring, AnyPublisher::Single(publisher))
    } else {
        let ring = Ring::new(config).unwrap();
        let publisher = ring.publisher();
        (ring, AnyPublisher::Shared(publisher))
    }
}

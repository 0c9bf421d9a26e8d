//! The in-flight limit shared by every RPC, and so by the HTTP bridge,
//! which calls the same services.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight across both transports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for one request, or `None` when `max` are already in flight.
    pub fn try_start(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

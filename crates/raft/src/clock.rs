//! The [`Clock`] trait: monotonic time, injectable for tests (the original's `Clock`).

use std::time::{Duration, Instant};

/// A monotonic clock. Readings never go backwards and keep advancing while the process is
/// paused; the leader lease is measured with it, never with wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Time since an arbitrary, fixed origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock (`std::time::Instant`).
#[derive(Debug, Clone, Copy)]
pub struct StandardClock {
    origin: Instant,
}

impl StandardClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        StandardClock {
            origin: Instant::now(),
        }
    }
}

impl Default for StandardClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StandardClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

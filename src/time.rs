//! Wall-clock timing that works natively and in the browser (std's `Instant` panics on
//! wasm32-unknown-unknown). Timings are part of every result, not logging.

use web_time::Instant;

pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    /// Milliseconds since `start`, with sub-millisecond precision.
    pub fn ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

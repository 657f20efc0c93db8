//! The durable job queue's worker side: claiming, running, retrying. Jobs live in the `jobs`
//! table (see `store::jobs`), enqueued in the same transaction as the change that causes them.

pub mod clock;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use worker::{Handler, JobFailure, Outcome, Worker, WorkerConfig};

use chrono::Duration;
use rand::Rng;

/// Exponential backoff with jitter: `base · 2^(attempt-1)`, at most `max`, plus up to half of
/// that at random so that jobs failing together do not retry in lockstep.
pub fn backoff(attempt: i64, base: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let delay = base
        .checked_mul(2_i32.saturating_pow(exponent))
        .unwrap_or(max)
        .min(max);
    let jitter_ms = rand::thread_rng().gen_range(0..=delay.num_milliseconds().max(1) / 2);
    delay + Duration::milliseconds(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let base = Duration::seconds(10);
        let max = Duration::seconds(300);
        for (attempt, expected) in [(1, 10), (2, 20), (3, 40), (6, 300), (40, 300)] {
            let d = backoff(attempt, base, max);
            let floor = Duration::seconds(expected);
            assert!(
                d >= floor && d <= floor + floor / 2,
                "attempt {attempt}: {d}"
            );
        }
    }
}

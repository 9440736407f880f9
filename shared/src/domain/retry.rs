//! When to try a failed delivery again, and when to stop: by the message's
//! age, not by how often the queue handed it out.

use std::time::Duration;

/// Exponential backoff with full jitter, capped, honouring a provider's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// The queue's `maxReceiveCount`: on this receive a record still to be
    /// retried is handed over to a fresh queue message, so that only records that
    /// can never be processed reach the dead-letter queue.
    pub max_receives: u32,
    /// `MAX_DELIVERY_AGE_SECONDS`: retryable failures are retried until the
    /// message is this old (Twilio keeps a message in its own queue 10 hours).
    pub max_age: Duration,
}

/// SQS accepts visibility timeouts of at most 12 hours.
const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60);

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, given a random `jitter` in `0.0..=1.0`.
    /// A provider's `Retry-After` wins when it asks for longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.cap);
        let jittered = exp.mul_f64(jitter.clamp(0.0, 1.0)).max(self.base.min(exp));
        retry_after
            .map_or(jittered, |ra| ra.max(jittered))
            .min(MAX_DELAY)
    }

    /// Whether the receive with this count is the last one the queue allows.
    pub fn is_last_receive(&self, receive_count: u32) -> bool {
        receive_count >= self.max_receives
    }

    /// Whether a message `age` old, to be retried after `delay`, is past its
    /// time: the next attempt would come after `max_age`.
    pub fn exhausted(&self, age: Duration, delay: Duration) -> bool {
        age.saturating_add(delay) > self.max_age
    }

    /// How many hand-overs a record gets before it is let go to the
    /// dead-letter queue: as many as `max_age` can hold at the shortest delay
    /// (every receive waits at least `base`), and one more. A message still
    /// being retried ends `failed` before that; a record that can never be
    /// processed (its message unreadable, the store unreachable) does reach the
    /// dead-letter queue and its alarm instead of circling forever.
    pub fn max_hops(&self) -> u32 {
        let hop = self.base.max(Duration::from_secs(1)) * self.max_receives.max(1);
        let hops = self.max_age.as_secs_f64() / hop.as_secs_f64();
        (hops.ceil() as u32).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            max_receives: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(2, None, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_secs(60));
        assert_eq!(p.delay(u32::MAX, None, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_base_and_the_exponential_step() {
        let p = policy();
        assert_eq!(p.delay(4, None, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(4, None, 0.5), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let p = policy();
        let ra = Some(Duration::from_secs(30));
        assert_eq!(p.delay(1, ra, 1.0), Duration::from_secs(30));
        assert_eq!(
            p.delay(6, Some(Duration::from_secs(1)), 1.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(100_000)), 1.0),
            MAX_DELAY
        );
    }

    #[test]
    fn retries_end_by_age_and_records_by_hops() {
        let p = policy();
        assert!(!p.exhausted(Duration::from_secs(3000), Duration::from_secs(60)));
        assert!(p.exhausted(Duration::from_secs(3590), Duration::from_secs(11)));
        // 3600 s at 2 s per receive, 5 receives per queue message: 360 hops, and one more.
        assert_eq!(p.max_hops(), 361);
    }

    #[test]
    fn last_receive_is_the_queue_limit() {
        let p = policy();
        assert!(!p.is_last_receive(4));
        assert!(p.is_last_receive(5));
        assert!(p.is_last_receive(6));
    }
}

//! What local runtimes (`cargo lambda watch`, `sam local`) do differently
//! from Lambda, and what the functions allow for it, in one place. An
//! allowance that would relax a check applies off Lambda only
//! (`Config::webhooks.local_runtime`, false on real Lambda).
//! - `cargo lambda watch` reports `https` in `X-Forwarded-Proto` for a
//!   plain-http request: a Twilio signature is also checked against the other
//!   scheme ([`signature_schemes`]).
//! - `cargo lambda watch` sends the invocation's timeout where Lambda sends its
//!   deadline: a deadline that has already passed is none ([`deadline`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The schemes a rebuilt webhook URL is checked with: the request's own, and
/// off Lambda the other of http/https too.
pub fn signature_schemes(scheme: &str, local_runtime: bool) -> Vec<&str> {
    let other = if scheme == "http" { "https" } else { "http" };
    if local_runtime {
        vec![scheme, other]
    } else {
        vec![scheme]
    }
}

/// Lambda's deadline (epoch milliseconds) as a monotonic instant. A deadline
/// that has passed before the invocation even started is not a real one (local
/// runtimes such as `cargo lambda watch` send the timeout instead): none then.
pub fn deadline(deadline_ms: u64, now: SystemTime) -> Option<Instant> {
    let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(deadline_ms))?;
    let remaining = deadline.duration_since(now).ok()?;
    Some(Instant::now() + remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_scheme_is_tried_off_lambda_only() {
        assert_eq!(signature_schemes("https", false), ["https"]);
        assert_eq!(signature_schemes("https", true), ["https", "http"]);
        assert_eq!(signature_schemes("http", true), ["http", "https"]);
    }

    #[test]
    fn deadlines_are_epoch_milliseconds_in_the_future() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let in_30s = 1_800_000_030_000;
        let remaining = deadline(in_30s, now).unwrap() - Instant::now();
        assert!(
            remaining > Duration::from_secs(29) && remaining <= Duration::from_secs(30),
            "{remaining:?}"
        );
        assert_eq!(
            deadline(600_000, now),
            None,
            "a relative timeout is not a deadline"
        );
        assert_eq!(deadline(1_799_999_999_000, now), None);
    }
}

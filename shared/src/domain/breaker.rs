//! A circuit breaker per provider: after `threshold` retryable failures in a
//! row, calls to that provider pause for `cooldown`; then one call at a time
//! probes it, and a success closes the circuit again. State is per process
//! (one Lambda container); time is passed in, so the rules are tested here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ProviderKind;

/// May a call to the provider start now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The circuit is closed: call.
    Call,
    /// The cool-down is over: this call is the one probe.
    Probe,
    /// Paused: try again after this long, without calling.
    Wait(Duration),
}

/// How a call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// The provider answered (accepted, or refused this message for good).
    Answered,
    /// A retryable failure: throttled, server error, timeout, no connection.
    Failed,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// When the current probe started; another may start after a cool-down
    /// (a probe whose record ended without a call must not block forever).
    probe_since: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    /// Retryable failures in a row that open the circuit; 0 turns it off.
    threshold: u32,
    cooldown: Duration,
    states: Mutex<HashMap<ProviderKind, State>>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn with_state<T>(&self, provider: ProviderKind, f: impl FnOnce(&mut State) -> T) -> T {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(provider).or_default())
    }

    pub fn gate(&self, provider: ProviderKind, now: Instant) -> Gate {
        if self.threshold == 0 {
            return Gate::Call;
        }
        let cooldown = self.cooldown;
        self.with_state(provider, |state| match state.open_until {
            None => Gate::Call,
            Some(until) if now < until => Gate::Wait(until - now),
            Some(_) => match state.probe_since {
                Some(since) if now < since + cooldown => Gate::Wait(since + cooldown - now),
                _ => {
                    state.probe_since = Some(now);
                    Gate::Probe
                }
            },
        })
    }

    /// Records how a call ended; `true` when this failure opened the circuit
    /// (from closed, or a failed probe re-opening it).
    pub fn record(&self, provider: ProviderKind, result: CallResult, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let (threshold, cooldown) = (self.threshold, self.cooldown);
        self.with_state(provider, |state| match result {
            CallResult::Answered => {
                *state = State::default();
                false
            }
            CallResult::Failed => {
                state.failures = state.failures.saturating_add(1);
                let probing = state.probe_since.take().is_some();
                let was_open = state.open_until.is_some();
                if probing || (!was_open && state.failures >= threshold) {
                    state.open_until = Some(now + cooldown);
                    return true;
                }
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWILIO: ProviderKind = ProviderKind::Twilio;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_secs(30))
    }

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row() {
        let b = breaker();
        let t = Instant::now();
        assert!(!b.record(TWILIO, CallResult::Failed, t));
        assert!(!b.record(TWILIO, CallResult::Failed, t));
        assert_eq!(b.gate(TWILIO, t), Gate::Call);
        assert!(
            b.record(TWILIO, CallResult::Failed, t),
            "the third opens it"
        );
        assert_eq!(
            b.gate(TWILIO, t + Duration::from_secs(10)),
            Gate::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            b.gate(ProviderKind::SendGrid, t),
            Gate::Call,
            "per provider"
        );
    }

    #[test]
    fn an_answer_resets_the_count() {
        let b = breaker();
        let t = Instant::now();
        b.record(TWILIO, CallResult::Failed, t);
        b.record(TWILIO, CallResult::Failed, t);
        b.record(TWILIO, CallResult::Answered, t);
        assert!(!b.record(TWILIO, CallResult::Failed, t));
        assert_eq!(b.gate(TWILIO, t), Gate::Call);
    }

    #[test]
    fn after_the_cool_down_one_probe_at_a_time_decides() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(TWILIO, CallResult::Failed, t);
        }
        let later = t + Duration::from_secs(31);
        assert_eq!(b.gate(TWILIO, later), Gate::Probe);
        assert!(
            matches!(b.gate(TWILIO, later), Gate::Wait(_)),
            "one probe at a time"
        );
        assert!(
            b.record(TWILIO, CallResult::Failed, later),
            "a failed probe re-opens"
        );
        assert!(matches!(
            b.gate(TWILIO, later + Duration::from_secs(1)),
            Gate::Wait(_)
        ));
        let again = later + Duration::from_secs(31);
        assert_eq!(b.gate(TWILIO, again), Gate::Probe);
        b.record(TWILIO, CallResult::Answered, again);
        assert_eq!(b.gate(TWILIO, again), Gate::Call, "a good probe closes it");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_block_forever() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(TWILIO, CallResult::Failed, t);
        }
        let later = t + Duration::from_secs(31);
        assert_eq!(b.gate(TWILIO, later), Gate::Probe);
        assert_eq!(b.gate(TWILIO, later + Duration::from_secs(31)), Gate::Probe);
    }

    #[test]
    fn a_zero_threshold_turns_it_off() {
        let b = Breaker::new(0, Duration::from_secs(30));
        let t = Instant::now();
        for _ in 0..10 {
            assert!(!b.record(TWILIO, CallResult::Failed, t));
        }
        assert_eq!(b.gate(TWILIO, t), Gate::Call);
    }
}

//! Retry with exponential backoff and jitter, then a dead letter.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before the dead letter; 0 = never give up.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Each delay is spread at random by ± this fraction, so peers coming back are not
    /// hit by every queue at once.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Delay after the `attempt`-th failure (1-based), or `None` when it was the last allowed.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if self.max_attempts != 0 && attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            rand::random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_stops() {
        let p = RetryPolicy {
            jitter: 0.0,
            max_attempts: 5,
            ..Default::default()
        };
        let delays: Vec<_> = (1..=5).map(|a| p.delay_after(a)).collect();
        assert_eq!(delays[0], Some(Duration::from_secs(1)));
        assert_eq!(delays[3], Some(Duration::from_secs(8)));
        assert_eq!(delays[4], None, "fifth failure is the last");
        let capped = RetryPolicy {
            jitter: 0.0,
            max_attempts: 0,
            ..Default::default()
        };
        assert_eq!(capped.delay_after(30), Some(Duration::from_secs(300)));
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..Default::default()
        };
        for _ in 0..200 {
            let d = p.delay_after(2).unwrap().as_secs_f64();
            assert!((1.0..=3.0).contains(&d), "{d}");
        }
    }
}

//! Recidive: each new ban of a known offender lasts longer, as fail2ban's
//! `bantime.increment` does.

use chrono::Duration;

/// How ban times grow with the number of earlier bans.
#[derive(Debug, Clone, PartialEq)]
pub enum Growth {
    /// `bantime * factor^(n-1)` for the n-th ban.
    Exponential { factor: f64 },
    /// fail2ban's `bantime.multipliers`: the n-th ban lasts `bantime *
    /// multipliers[n-1] * factor` (the last multiplier for later bans).
    Multipliers { multipliers: Vec<f64>, factor: f64 },
    /// fail2ban's default formula: `bantime * 2^min(n-1, 20) * factor`.
    Fail2banDefault { factor: f64 },
}

/// Ban-time growth with its cap.
#[derive(Debug, Clone, PartialEq)]
pub struct BanGrowth {
    pub growth: Growth,
    /// No ban grows longer than this.
    pub maxtime: Option<Duration>,
}

impl BanGrowth {
    /// How long the ban of an offender banned `previous` times before lasts.
    pub fn duration(&self, base: Duration, previous: u32) -> Duration {
        let base_s = base.num_milliseconds() as f64 / 1000.0;
        let multiplier = match &self.growth {
            Growth::Exponential { factor } => {
                factor.powi(i32::try_from(previous).unwrap_or(i32::MAX).min(64))
            }
            Growth::Multipliers {
                multipliers,
                factor,
            } => {
                let i = (previous as usize).min(multipliers.len().saturating_sub(1));
                multipliers.get(i).copied().unwrap_or(1.0) * factor
            }
            Growth::Fail2banDefault { factor } => f64::from(1u32 << previous.min(20)) * factor,
        };
        let secs = (base_s * multiplier).max(base_s.min(1.0));
        let capped = match self.maxtime {
            Some(max) => secs.min(max.num_milliseconds() as f64 / 1000.0),
            None => secs,
        };
        // Far beyond any useful ban: 100 years.
        let capped = if capped.is_finite() {
            capped.min(3_153_600_000.0)
        } else {
            3_153_600_000.0
        };
        Duration::milliseconds((capped * 1000.0) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn min(m: i64) -> Duration {
        Duration::minutes(m)
    }

    #[test]
    fn growth_follows_the_formula_and_stops_at_maxtime() {
        let g = BanGrowth {
            growth: Growth::Exponential { factor: 2.0 },
            maxtime: Some(min(100)),
        };
        let seq: Vec<i64> = (0..6)
            .map(|n| g.duration(min(10), n).num_minutes())
            .collect();
        assert_eq!(seq, vec![10, 20, 40, 80, 100, 100]);
        let f = BanGrowth {
            growth: Growth::Fail2banDefault { factor: 1.0 },
            maxtime: None,
        };
        assert_eq!(f.duration(min(10), 3), min(80));
        let m = BanGrowth {
            growth: Growth::Multipliers {
                multipliers: vec![1.0, 5.0, 30.0],
                factor: 1.0,
            },
            maxtime: None,
        };
        assert_eq!(m.duration(min(1), 1), min(5));
        assert_eq!(m.duration(min(1), 9), min(30));
    }

    proptest! {
        #[test]
        fn durations_never_shrink_and_respect_the_cap(base in 1i64..100_000, factor in 1.0f64..4.0, max in 1i64..1_000_000) {
            let g = BanGrowth { growth: Growth::Exponential { factor }, maxtime: Some(Duration::seconds(max.max(base))) };
            let mut last = Duration::zero();
            for n in 0..40 {
                let d = g.duration(Duration::seconds(base), n);
                prop_assert!(d >= last);
                prop_assert!(d <= Duration::seconds(max.max(base)));
                last = d;
            }
        }
    }
}

//! Events series from the per-minute counts (`event_minutes`, kept exact
//! by triggers in both databases, see migration 0006): which whole minutes
//! of a range the counts answer, which edges are counted from the events
//! themselves, and how the parts are merged. Pure, for tests.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::api::Bucket;
use super::StoreError;

/// How one events series over `[since, until)` is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Split {
    /// Whole minutes `[lo, hi)`, as Unix time / 60, read from the counts.
    pub minutes: Option<(i64, i64)>,
    /// Ranges `[from, to)` counted from the events rows.
    pub raw: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// A minute never straddles two buckets when the step is a whole number of
/// minutes (buckets are aligned on the Unix epoch): then every whole minute
/// inside the range comes from the counts and only the partial minutes at
/// either end are counted from events. Other steps count events.
pub(super) fn split(since: DateTime<Utc>, until: DateTime<Utc>, step: i64) -> Split {
    let all_raw = Split {
        minutes: None,
        raw: vec![(since, until)],
    };
    if step <= 0 || step % 60 != 0 || since >= until {
        return all_raw;
    }
    let s = since.timestamp();
    let on_minute = since.timestamp_subsec_nanos() == 0 && s.rem_euclid(60) == 0;
    let lo = s.div_euclid(60) + i64::from(!on_minute);
    let hi = until.timestamp().div_euclid(60);
    let (Some(lo_at), Some(hi_at)) = (minute_start(lo), minute_start(hi)) else {
        return all_raw;
    };
    if lo >= hi {
        return all_raw;
    }
    let mut raw = Vec::new();
    if since < lo_at {
        raw.push((since, lo_at));
    }
    if hi_at < until {
        raw.push((hi_at, until));
    }
    Split {
        minutes: Some((lo, hi)),
        raw,
    }
}

fn minute_start(minute: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(minute.checked_mul(60)?, 0).single()
}

/// The bucket (Unix seconds) a time in seconds falls in.
pub(super) fn bucket_of(secs: i64, step: i64) -> i64 {
    secs.div_euclid(step) * step
}

/// Buckets from `(start in Unix seconds, count)` parts: counts of one start
/// added up, empty buckets left out, oldest first.
pub(super) fn merge(
    parts: impl IntoIterator<Item = (i64, i64)>,
) -> Result<Vec<Bucket>, StoreError> {
    let mut sums: BTreeMap<i64, i64> = BTreeMap::new();
    for (start, n) in parts {
        *sums.entry(start).or_default() += n;
    }
    sums.into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(start, n)| {
            Ok(Bucket {
                start: Utc
                    .timestamp_opt(start, 0)
                    .single()
                    .ok_or_else(|| StoreError::Corrupt(format!("bucket start {start}")))?,
                count: u64::try_from(n)
                    .map_err(|_| StoreError::Corrupt(format!("negative count {n} at {start}")))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("time")
    }

    #[test]
    fn whole_minutes_from_counts_edges_from_events() {
        let got = split(t(6_030), t(9_000 + 15), 3_600);
        assert_eq!(got.minutes, Some((101, 150)));
        assert_eq!(got.raw, vec![(t(6_030), t(6_060)), (t(9_000), t(9_015))]);
    }

    #[test]
    fn aligned_ranges_need_no_events() {
        let got = split(t(600), t(1_200), 60);
        assert_eq!(got.minutes, Some((10, 20)));
        assert!(got.raw.is_empty());
    }

    #[test]
    fn a_fraction_of_a_second_is_not_a_whole_minute() {
        let since = t(600) + chrono::Duration::milliseconds(1);
        let got = split(since, t(1_200), 60);
        assert_eq!(got.minutes, Some((11, 20)));
        assert_eq!(got.raw, vec![(since, t(660))]);
    }

    #[test]
    fn short_ranges_and_odd_steps_count_events() {
        for (since, until, step) in [(30, 90, 60), (10, 50, 60), (0, 600, 90), (0, 600, 1)] {
            let got = split(t(since), t(until), step);
            assert_eq!(got.minutes, None, "{since}..{until} step {step}");
            assert_eq!(got.raw, vec![(t(since), t(until))]);
        }
    }

    #[test]
    fn negative_times_round_down() {
        let got = split(t(-90), t(30), 60);
        assert_eq!(got.minutes, Some((-1, 0)));
        assert_eq!(got.raw, vec![(t(-90), t(-60)), (t(0), t(30))]);
        assert_eq!(bucket_of(-1, 60), -60);
    }

    #[test]
    fn merging_adds_parts_and_drops_empty_buckets() {
        let got = merge([(120, 2), (0, 1), (120, 3), (60, 4), (60, -4)]).expect("merge");
        let pairs: Vec<(i64, u64)> = got.iter().map(|b| (b.start.timestamp(), b.count)).collect();
        assert_eq!(pairs, vec![(0, 1), (120, 5)]);
        assert!(matches!(merge([(0, -1)]), Err(StoreError::Corrupt(_))));
    }
}

//! Time zones of log lines: the zone a log is written in (named, with its
//! daylight saving rules, or a fixed offset) and the abbreviations lines
//! carry (`CET`, `EST`), which name fixed offsets.

use chrono::{FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::strptime::local_timestamp;

/// The zone a log's times are written in when a line names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    Named(Tz),
    Fixed(FixedOffset),
}

impl Zone {
    pub fn utc() -> Self {
        Zone::Fixed(FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!("0 is a valid offset")))
    }

    /// `Europe/Berlin`, `UTC`, `UTC+02:00`, `-0500`, `CET`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(tz) = s.parse::<Tz>() {
            return Ok(Zone::Named(tz));
        }
        let rest = s
            .strip_prefix("UTC")
            .or_else(|| s.strip_prefix("GMT"))
            .unwrap_or(s);
        let minutes = if rest.is_empty() {
            Some(0)
        } else if rest.starts_with(['+', '-']) {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let digits: String = rest[1..].chars().filter(char::is_ascii_digit).collect();
            match digits.len() {
                1 | 2 => digits.parse::<i32>().ok().map(|h| sign * h * 60),
                4 => match (digits[..2].parse::<i32>(), digits[2..].parse::<i32>()) {
                    (Ok(h), Ok(m)) => Some(sign * (h * 60 + m)),
                    _ => None,
                },
                _ => None,
            }
        } else {
            abbreviation_offset(rest)
        };
        minutes
            .and_then(|m| FixedOffset::east_opt(m * 60))
            .map(Zone::Fixed)
            .ok_or_else(|| {
                format!("unknown time zone {s:?} (examples: Europe/Berlin, UTC, UTC+02:00, CET)")
            })
    }

    /// Local wall time at Unix time `t`.
    pub fn naive_at(&self, t: i64) -> NaiveDateTime {
        let utc = Utc.timestamp_opt(t, 0).single().unwrap_or_default();
        match self {
            Zone::Named(tz) => utc.with_timezone(tz).naive_local(),
            Zone::Fixed(off) => utc.with_timezone(off).naive_local(),
        }
    }

    /// Unix time of local wall time `naive`.
    pub fn timestamp(&self, naive: NaiveDateTime) -> Option<i64> {
        match self {
            Zone::Named(tz) => local_timestamp(tz, naive),
            Zone::Fixed(off) => local_timestamp(off, naive),
        }
    }
}

/// Offsets (minutes east of UTC) of common zone abbreviations. Each names
/// one fixed offset: `CET` is +01:00 all year, `CEST` +02:00.
const ABBREVIATIONS: &[(&str, i32)] = &[
    ("UTC", 0),
    ("GMT", 0),
    ("UT", 0),
    ("Z", 0),
    ("WET", 0),
    ("WEST", 60),
    ("BST", 60),
    ("IST", 60),
    ("CET", 60),
    ("CEST", 120),
    ("MET", 60),
    ("MEST", 120),
    ("WAT", 60),
    ("EET", 120),
    ("EEST", 180),
    ("CAT", 120),
    ("SAST", 120),
    ("MSK", 180),
    ("EAT", 180),
    ("IDT", 180),
    ("GST", 240),
    ("PKT", 300),
    ("ICT", 420),
    ("WIB", 420),
    ("HKT", 480),
    ("SGT", 480),
    ("AWST", 480),
    ("PHT", 480),
    ("JST", 540),
    ("KST", 540),
    ("ACST", 570),
    ("ACDT", 630),
    ("AEST", 600),
    ("AEDT", 660),
    ("NZST", 720),
    ("NZDT", 780),
    ("AST", -240),
    ("ADT", -180),
    ("NST", -210),
    ("NDT", -150),
    ("EST", -300),
    ("EDT", -240),
    ("CST", -360),
    ("CDT", -300),
    ("MST", -420),
    ("MDT", -360),
    ("PST", -480),
    ("PDT", -420),
    ("AKST", -540),
    ("AKDT", -480),
    ("HST", -600),
    ("BRT", -180),
    ("ART", -180),
    ("CLT", -240),
    // Military letters.
    ("A", 60),
    ("B", 120),
    ("C", 180),
    ("D", 240),
    ("E", 300),
    ("F", 360),
    ("G", 420),
    ("H", 480),
    ("I", 540),
    ("K", 600),
    ("L", 660),
    ("M", 720),
    ("N", -60),
    ("O", -120),
    ("P", -180),
    ("Q", -240),
    ("R", -300),
    ("S", -360),
    ("T", -420),
    ("U", -480),
    ("V", -540),
    ("W", -600),
    ("X", -660),
    ("Y", -720),
];

/// The offset a zone abbreviation stands for.
pub fn abbreviation_offset(abbr: &str) -> Option<i32> {
    ABBREVIATIONS
        .iter()
        .find(|(a, _)| *a == abbr)
        .map(|(_, o)| *o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse() {
        assert_eq!(Zone::parse("+00:00").unwrap(), Zone::utc());
        assert!(matches!(
            Zone::parse("Europe/Berlin").unwrap(),
            Zone::Named(_)
        ));
        assert_eq!(
            Zone::parse("UTC+02:00").unwrap(),
            Zone::Fixed(FixedOffset::east_opt(7200).unwrap())
        );
        assert_eq!(
            Zone::parse("-0500").unwrap(),
            Zone::Fixed(FixedOffset::east_opt(-18000).unwrap())
        );
        assert_eq!(
            Zone::parse("CEST").unwrap(),
            Zone::Fixed(FixedOffset::east_opt(7200).unwrap())
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let summer = chrono::NaiveDate::from_ymd_opt(2005, 8, 14)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert_eq!(berlin.timestamp(summer), Some(1_124_013_600));
        let winter = chrono::NaiveDate::from_ymd_opt(2005, 1, 14)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert_eq!(berlin.timestamp(winter), Some(1_105_700_400));
        // 02:30 on the spring-forward night does not exist: 03:30 CEST.
        let gap = chrono::NaiveDate::from_ymd_opt(2005, 3, 27)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(berlin.timestamp(gap), Some(1_111_887_000));
        assert_eq!(berlin.naive_at(1_124_013_600), summer);
    }
}

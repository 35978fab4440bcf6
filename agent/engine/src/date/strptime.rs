//! strptime-style date patterns (`%b %d %H:%M:%S`, with fail2ban's `%Ex…`
//! variants) turned into regular expressions with one named group per
//! field, and matched fields turned back into a time.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};

use super::zone::{abbreviation_offset, Zone};

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn names(full: &[&str], abbreviated: bool) -> String {
    let mut v: Vec<String> = full
        .iter()
        .map(|n| {
            if abbreviated {
                n[..3].to_owned()
            } else {
                (*n).to_owned()
            }
        })
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.join("|")
}

/// The year range `%ExY` accepts: 2000 to three years after `now_year`.
fn year_regex(now_year: i32) -> String {
    let last = (now_year + 3).max(2000);
    let decades: Vec<i32> = (200..=last / 10).collect();
    let mut alts = Vec::new();
    for century in [20, 21] {
        let digits: Vec<i32> = decades
            .iter()
            .filter(|d| **d / 10 == century)
            .map(|d| d % 10)
            .collect();
        if let (Some(first), Some(last)) = (digits.first(), digits.last()) {
            alts.push(format!("{century}[{first}-{last}]"));
        }
    }
    format!(r"(?P<Y>(?:{})\d)", alts.join("|"))
}

/// The regex of one directive (`Y`, `ExY`, `b`, …), or `None` if unknown.
pub fn directive(name: &str, now_year: i32) -> Option<String> {
    Some(match name {
        "a" => format!("(?P<a>{})", names(&DAYS, true)),
        "A" => format!("(?P<A>{})", names(&DAYS, false)),
        "b" => format!("(?P<b>{})", names(&MONTHS, true)),
        "B" => format!("(?P<B>{})", names(&MONTHS, false)),
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])".into(),
        "f" => r"(?P<f>[0-9]{1,6})".into(),
        "H" => r"(?P<H>[0-1]?\d|2[0-3])".into(),
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])".into(),
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])".into(),
        "m" => r"(?P<m>0?[1-9]|1[0-2])".into(),
        "M" => r"(?P<M>[0-5]?\d)".into(),
        "p" => r"(?P<p>am|pm)".into(),
        "S" => r"(?P<S>[0-5]?\d|6[0-1])".into(),
        "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)".into(),
        "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)".into(),
        "w" => r"(?P<w>[0-6])".into(),
        "y" | "Exy" => r"(?P<y>\d\d)".into(),
        "Y" => r"(?P<Y>\d\d\d\d)".into(),
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)".into(),
        "Z" => r"(?P<Z>Z|[A-Z]{3,5})".into(),
        "k" => r" ?(?P<H>[0-2]?\d)".into(),
        "l" => r" ?(?P<I>1?\d)".into(),
        "ExZ" => r"(?P<Z>[A-Z](?:[A-Z]{2,4})?)".into(),
        "Exz" => {
            r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)".into()
        }
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])".into(),
        "Exm" => r"(?P<m>0[1-9]|1[0-2])".into(),
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])".into(),
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])".into(),
        "Exl" => r" ?(?P<I>1[0-2]|\d)".into(),
        "ExM" => r"(?P<M>[0-5]\d)".into(),
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])".into(),
        "ExY" => year_regex(now_year),
        "%" => "%".into(),
        _ => return None,
    })
}

const LONG_DIRECTIVES: [&str; 14] = [
    "ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy", "Exb", "ExB",
    "Exa",
];

/// Expands every `%X` of `pattern`; `Err` names the first unknown one.
/// Returns the regex and whether a name directive (`%a %A %b %B %p`)
/// makes matching case-insensitive.
pub fn expand(pattern: &str, now_year: i32) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(pattern.len() * 4);
    let mut alpha = false;
    let mut rest = pattern;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let long = LONG_DIRECTIVES
            .iter()
            .find(|d| after.starts_with(*d))
            .copied();
        let name = match long {
            Some(l) => l,
            None => match after.chars().next() {
                Some(c) => &after[..c.len_utf8()],
                None => return Err("pattern ends with '%'".into()),
            },
        };
        let regex =
            directive(name, now_year).ok_or_else(|| format!("unknown directive %{name}"))?;
        alpha |= matches!(name, "a" | "A" | "b" | "B" | "p");
        out.push_str(&regex);
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    Ok((out, alpha))
}

/// Fields captured from a date.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    pub values: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(n, v)| *n == k && !v.is_empty())
            .map(|(_, v)| *v)
    }
}

/// The time (Unix seconds) the fields describe, as fail2ban computes it: a
/// missing year is this year (or last year if that would be more than a
/// day ahead of `now`), a missing day is today (or yesterday), the line's
/// own zone wins over `zone`.
pub fn to_time(f: &Fields<'_>, now: i64, zone: &Zone) -> Option<f64> {
    let now_local = zone.naive_at(now);
    let num = |k: &str| f.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    let mut year = num("Y").map(|y| y as i32);
    if year.is_none() {
        if let Some(y) = num("y") {
            year = Some(if y <= 2000 { y as i32 + 2000 } else { y as i32 });
        }
    }
    let mut month = num("m").map(|m| m as u32);
    if let Some(b) = f.get("b").or_else(|| f.get("B")) {
        let b = b.to_lowercase();
        month = MONTHS
            .iter()
            .position(|m| m.starts_with(&b) && (b.len() == 3 || *m == b))
            .map(|i| i as u32 + 1);
        month?;
    }
    let mut day = num("d").map(|d| d as u32);
    let mut hour = num("H").unwrap_or(0) as u32;
    if let Some(i) = num("I") {
        let pm = f.get("p").is_some_and(|p| p.eq_ignore_ascii_case("pm"));
        hour = match (i, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h as u32 + 12,
            (h, false) => h as u32,
        };
    }
    let minute = num("M").unwrap_or(0) as u32;
    let second = num("S").unwrap_or(0).min(59) as u32;
    let offset_minutes = match f.get("z").or_else(|| f.get("Z")) {
        Some("Z" | "UTC" | "GMT") => Some(0),
        Some(z) => Some(offset_of(z)?),
        None => None,
    };
    let assume_year = year.is_none();
    let year_v = year.unwrap_or(now_local.year());
    if month.is_none() || day.is_none() {
        if let Some(j) = num("j") {
            let d = NaiveDate::from_yo_opt(year_v, j as u32)?;
            month = Some(d.month());
            day = Some(d.day());
        }
    }
    let assume_today = month.is_none() && day.is_none();
    let (month, day) = match (month, day) {
        (Some(m), Some(d)) => (m, d),
        (None, None) => (now_local.month(), now_local.day()),
        _ => return None,
    };
    let naive = NaiveDate::from_ymd_opt(year_v, month, day)?.and_hms_opt(hour, minute, second)?;
    let mut t = resolve(naive, offset_minutes, zone)?;
    if assume_today && t > now {
        t -= 86_400;
    }
    if assume_year && t > now + 86_400 {
        let prev =
            NaiveDate::from_ymd_opt(year_v - 1, month, day)?.and_hms_opt(hour, minute, second)?;
        t = resolve(prev, offset_minutes, zone)?;
    }
    Some(t as f64)
}

fn resolve(naive: NaiveDateTime, offset_minutes: Option<i32>, zone: &Zone) -> Option<i64> {
    match offset_minutes {
        Some(off) => Some(naive.and_utc().timestamp() - i64::from(off) * 60),
        None => zone.timestamp(naive),
    }
}

/// Minutes east of UTC for `CET`, `+0200`, `-05:30`, `EST+01`, …
fn offset_of(z: &str) -> Option<i32> {
    let split = z.find(['+', '-']).unwrap_or(z.len());
    let (abbr, off) = z.split_at(split);
    let base = if abbr.is_empty() {
        0
    } else {
        abbreviation_offset(abbr)?
    };
    if off.is_empty() {
        return Some(base);
    }
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits: String = off[1..].chars().filter(char::is_ascii_digit).collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    Some(base + sign * (h * 60 + m))
}

/// Local time `naive` in `zone` as Unix seconds: an ambiguous time (the
/// hour repeated in autumn) is its first occurrence, a time that does not
/// exist (the hour skipped in spring) is moved forward an hour.
pub fn local_timestamp<Tz: TimeZone>(tz: &Tz, naive: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.timestamp()),
        LocalResult::Ambiguous(a, _) => Some(a.timestamp()),
        LocalResult::None => tz
            .from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()
            .map(|t| t.timestamp()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_expand() {
        let (r, alpha) = expand("%b %d %H:%M:%S", 2026).unwrap();
        assert!(alpha);
        assert!(r.starts_with("(?P<b>"));
        assert_eq!(expand("%ExY", 2026).unwrap().0, r"(?P<Y>(?:20[0-2])\d)");
        assert_eq!(expand("100%%", 2026).unwrap().0, "100%");
        assert!(expand("%q", 2026).is_err());
        assert!(expand("x%", 2026).is_err());
    }

    #[test]
    fn fields_become_times() {
        let utc = Zone::utc();
        let now = 1_124_013_600; // 2005-08-14 10:00:00 UTC
        let f = |v: &[(&'static str, &'static str)]| Fields { values: v.to_vec() };
        // Full date.
        let t = to_time(
            &f(&[
                ("Y", "2005"),
                ("m", "08"),
                ("d", "14"),
                ("H", "09"),
                ("M", "30"),
                ("S", "05"),
            ]),
            now,
            &utc,
        );
        assert_eq!(t, Some(1_124_011_805.0));
        // No year: this year, unless that is more than a day ahead.
        let t = to_time(
            &f(&[
                ("b", "Aug"),
                ("d", "14"),
                ("H", "09"),
                ("M", "30"),
                ("S", "05"),
            ]),
            now,
            &utc,
        );
        assert_eq!(t, Some(1_124_011_805.0));
        let t = to_time(
            &f(&[
                ("b", "Dec"),
                ("d", "31"),
                ("H", "23"),
                ("M", "59"),
                ("S", "59"),
            ]),
            now,
            &utc,
        )
        .unwrap();
        assert_eq!(t, 1_104_537_599.0); // 2004-12-31
                                        // Explicit zone.
        let t = to_time(
            &f(&[
                ("Y", "2005"),
                ("m", "8"),
                ("d", "14"),
                ("H", "12"),
                ("M", "0"),
                ("S", "0"),
                ("z", "+0200"),
            ]),
            now,
            &utc,
        );
        assert_eq!(t, Some(1_124_013_600.0));
        let t = to_time(
            &f(&[
                ("Y", "2005"),
                ("m", "8"),
                ("d", "14"),
                ("H", "11"),
                ("M", "0"),
                ("S", "0"),
                ("Z", "CET"),
            ]),
            now,
            &utc,
        );
        assert_eq!(t, Some(1_124_013_600.0));
        // 12-hour clock.
        let t = to_time(
            &f(&[
                ("Y", "2005"),
                ("m", "8"),
                ("d", "14"),
                ("I", "12"),
                ("p", "AM"),
            ]),
            now,
            &utc,
        );
        assert_eq!(t, Some(1_123_977_600.0));
        // Time only: today, or yesterday when ahead of now.
        let t = to_time(&f(&[("H", "11"), ("M", "0"), ("S", "0")]), now, &utc);
        assert_eq!(t, Some(1_124_013_600.0 - 86_400.0 + 3_600.0));
        assert_eq!(to_time(&f(&[("b", "Foo"), ("d", "1")]), now, &utc), None);
        assert_eq!(
            to_time(&f(&[("m", "2"), ("d", "30"), ("Y", "2005")]), now, &utc),
            None
        );
    }

    #[test]
    fn zone_abbreviations_and_offsets() {
        assert_eq!(offset_of("+0200"), Some(120));
        assert_eq!(offset_of("-05:30"), Some(-330));
        assert_eq!(offset_of("CEST"), Some(120));
        assert_eq!(offset_of("EST+01"), Some(-240));
        assert_eq!(offset_of("XYZ"), None);
    }
}

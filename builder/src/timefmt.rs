//! The two date formats kiln meets: RFC 2822 dates in Release files (`Date`, `Valid-Until`),
//! and RFC 3339 timestamps in OCI and TUF metadata, parsed and written by the `time` crate.
//! kiln's own types stay plain seconds (or days) since the epoch, so the rest of the crate never
//! sees a date type.

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// Parses an RFC 2822 date as Debian's Release files write it, e.g.
/// `Sat, 10 Jun 2023 08:54:14 UTC` (the weekday is optional and must match when present), into
/// seconds since the epoch; `None` for anything else, a date before 1970 included.
pub fn parse_rfc2822(text: &str) -> Option<u64> {
    // dak writes the zone as `UTC`, which RFC 2822 does not list (only `UT`, `GMT` and numeric
    // offsets, section 4.3); a missing zone has always meant UTC in Release files.
    let text = text.trim();
    let (rest, zone) = text.rsplit_once(' ')?;
    let normalised = match zone {
        "UTC" | "Z" | "UT" | "GMT" => format!("{rest} +0000"),
        numeric if numeric.starts_with(['+', '-']) => {
            // RFC 2822 allows any four digits; a real offset is below 24 hours.
            let hours: u8 = numeric.get(1..3)?.parse().ok()?;
            if hours > 23 {
                return None;
            }
            text.to_string()
        }
        time_of_day if time_of_day.contains(':') => format!("{text} +0000"),
        _ => return None,
    };
    let parsed = OffsetDateTime::parse(&normalised, &Rfc2822).ok()?;
    // The `time` crate reads the weekday but does not hold it against the date.
    if let Some((weekday, _)) = text.split_once(',') {
        let expected = parsed.weekday().to_string();
        if expected.get(..3) != Some(weekday.trim()) {
            return None;
        }
    }
    u64::try_from(parsed.unix_timestamp()).ok()
}

/// Parses a calendar date `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    Some(days_since_epoch(date))
}

fn days_since_epoch(date: Date) -> i64 {
    i64::from(date.to_julian_day() - OffsetDateTime::UNIX_EPOCH.date().to_julian_day())
}

/// Now, as seconds since the epoch (0 on a clock set before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Today (UTC) as days since 1970-01-01.
pub fn today() -> i64 {
    days_since_epoch(OffsetDateTime::now_utc().date())
}

/// Formats days since 1970-01-01 as `YYYY-MM-DD`.
pub fn date(days: i64) -> String {
    match i32::try_from(days).ok().and_then(|d| {
        Date::from_julian_day(OffsetDateTime::UNIX_EPOCH.date().to_julian_day() + d).ok()
    }) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        None => format!("day {days}"),
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC, e.g. `2023-06-10T08:54:14Z`.
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        // RFC 3339 ends at year 9999; later instants (no Release date reaches them) are clamped.
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".into())
}

/// Parses RFC 3339 UTC as TUF writes it (`2027-06-10T08:54:14Z`: no fraction, no other offset)
/// into seconds since the epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    // The TUF specification's "expires" is ISO 8601 `YYYY-MM-DDTHH:MM:SSZ`; anything else in a
    // signed document is a sign it was not written by a TUF tool.
    if text.len() != 20 || !text.ends_with('Z') || text.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    if parsed.offset() != UtcOffset::UTC {
        return None;
    }
    u64::try_from(parsed.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates() {
        assert_eq!(
            parse_rfc2822("Sat, 10 Jun 2023 08:54:14 UTC"),
            Some(1_686_387_254)
        );
        assert_eq!(
            parse_rfc2822("10 Jun 2023 10:54:14 +0200"),
            Some(1_686_387_254)
        );
        assert_eq!(parse_rfc2822("Sat, 10 Foo 2023 08:54:14 UTC"), None);
        assert_eq!(parse_rfc2822(""), None);
        // A zone with a character of two bytes across the hour/minute split: refused, no panic.
        assert_eq!(parse_rfc2822("10 Jun 2023 08:54:14 +1\u{e9}0"), None);
        assert_eq!(parse_rfc2822("10 Jun 2023 08:54:14 +\u{e9}00"), None);
        assert_eq!(parse_rfc2822("10 Jun 2023 08:54:14 +2400"), None);
        // Days that do not exist, negative times.
        assert_eq!(parse_rfc2822("31 Feb 2023 08:54:14 UTC"), None);
        assert_eq!(parse_rfc2822("29 Feb 2023 08:54:14 UTC"), None);
        assert!(parse_rfc2822("29 Feb 2024 08:54:14 UTC").is_some());
        assert_eq!(parse_rfc2822("10 Jun 2023 -1:54:14 UTC"), None);
        // A weekday that contradicts the date, a zone RFC 2822 does not know, before 1970.
        assert_eq!(parse_rfc2822("Mon, 10 Jun 2023 08:54:14 UTC"), None);
        assert_eq!(parse_rfc2822("Sat, 10 Jun 2023 08:54:14 CEST"), None);
        assert_eq!(parse_rfc2822("Wed, 31 Dec 1969 23:59:59 UTC"), None);
        // No zone means UTC, as Release files have always been read.
        assert_eq!(
            parse_rfc2822("Sat, 10 Jun 2023 08:54:14"),
            Some(1_686_387_254)
        );
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(
            parse_date("2024-02-29").map(date).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("soon"), None);
    }

    #[test]
    fn rfc3339_roundtrip() {
        assert_eq!(rfc3339(1_686_387_254), "2023-06-10T08:54:14Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for secs in [0, 951_782_400, 1_686_387_254, 4_102_444_799] {
            assert_eq!(parse_rfc3339_utc(&rfc3339(secs)), Some(secs));
        }
        for bad in [
            "2023-06-10T08:54:14",
            "2023-06-10 08:54:14Z",
            "2023-06-10T8:54:14Z",
            "2023-06-10T08:54:14+02:00",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }
}

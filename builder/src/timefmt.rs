//! The two date formats kiln meets: RFC 2822 dates in Release files (`Date`, `Valid-Until`),
//! and RFC 3339 timestamps in OCI metadata. Civil-date arithmetic from Howard Hinnant's
//! `days_from_civil`; small enough not to warrant a date crate.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an RFC 2822 date as Debian's Release files write it, e.g.
/// `Sat, 10 Jun 2023 08:54:14 UTC` (the weekday is optional; the zone is UTC, GMT, Z or ±HHMM).
pub fn parse_rfc2822(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = match text.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => text,
    };
    let mut parts = text.split_whitespace();
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next().unwrap_or("0").parse().ok()?;
    let offset = match parts.next().unwrap_or("UTC") {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        zone if zone.len() == 5
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.bytes().skip(1).all(|b| b.is_ascii_digit()) =>
        {
            // Checked digits, so the slices fall on character boundaries.
            let hh: i64 = zone.get(1..3)?.parse().ok()?;
            let mm: i64 = zone.get(3..5)?.parse().ok()?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let off = hh * 3600 + mm * 60;
            if zone.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    if !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&s)
        || year < 1970
        // 31 February and the like do not exist.
        || civil_from_days(days_from_civil(year, month, day)) != (year, month, day)
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs).ok()
}

/// Parses a calendar date `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || civil_from_days(days_from_civil(y, m, d)) != (y, m, d)
    {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Today (UTC) as days since 1970-01-01.
pub fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

/// Formats days since 1970-01-01 as `YYYY-MM-DD`.
pub fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Formats seconds since the epoch as RFC 3339 UTC, e.g. `2023-06-10T08:54:14Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses RFC 3339 UTC as TUF writes it (`2027-06-10T08:54:14Z`, nothing else) into seconds
/// since the epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    let (date_part, time_part) = text.split_once('T')?;
    let time_part = time_part.strip_suffix('Z')?;
    let days = parse_date(date_part)?;
    let mut hms = time_part.splitn(3, ':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if time_part.len() != 8
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..61).contains(&s)
    {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
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

//! Release-file dates (RFC 2822, always UTC in Debian archives) to and from Unix seconds.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

use pibake_host::civil::{civil_from_days, days_from_civil};

/// Parses `Sat, 10 May 2025 09:12:33 UTC` (zone `UTC`, `GMT`, `Z` or `+hhmm`/`-hhmm`).
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let mut it = s.split_whitespace();
    let day: i64 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as i64 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next().unwrap_or(Some(0))?);
    let offset = match it.next().unwrap_or("UTC") {
        "UTC" | "GMT" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let v: i64 = z[1..].parse().ok()?;
            let secs = (v / 100) * 3600 + (v % 100) * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Formats Unix seconds as a Release `Date:` value.
pub fn format_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let mon = MONTHS[(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        // `date -u -d 'Sat, 10 May 2025 09:12:33 UTC' +%s`
        assert_eq!(
            parse_date("Sat, 10 May 2025 09:12:33 UTC"),
            Some(1_746_868_353)
        );
        assert_eq!(
            parse_date("Sat, 10 May 2025 11:12:33 +0200"),
            Some(1_746_868_353)
        );
        assert_eq!(format_date(1_746_868_353), "Sat, 10 May 2025 09:12:33 UTC");
        assert_eq!(
            parse_date("29 Feb 2024 23:59:59 UTC")
                .map(format_date)
                .as_deref(),
            Some("Thu, 29 Feb 2024 23:59:59 UTC")
        );
        assert_eq!(parse_date("Sat, 10 Foo 2025 09:12:33 UTC"), None);
        assert_eq!(parse_date("Sat, 10 May 2025 25:12:33 UTC"), None);
    }
}

//! Points in time and durations as people write them: RFC 3339
//! (`2026-06-30T00:00:00Z`), a date (`2026-06-30`, midnight UTC) or a time
//! relative to now (`+30d`, `+90s`); durations as `30s`, `2m`, `500ms`.
//! The chain counts unix milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why a time or a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {what}: {why}")]
pub struct WhenError {
    input: String,
    what: &'static str,
    why: &'static str,
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration: a number followed by `ms`, `s`, `m`, `h`, `d` or `w`; a bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration, WhenError> {
    let trimmed = input.trim();
    let error = |why| WhenError {
        input: trimmed.to_owned(),
        what: "a duration",
        why,
    };
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(error("write a whole number and a unit, e.g. 30s or 2m"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| error("the number is too large"))?;
    let ms_per = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(error("the unit must be one of ms, s, m, h, d or w")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| error("the duration is too long"))
}

/// A point in time as unix milliseconds: RFC 3339, a date (`2026-06-30`,
/// midnight UTC), or `+<duration>` from `now_ms`.
pub fn parse_when(input: &str, now_ms: u64) -> Result<u64, WhenError> {
    let trimmed = input.trim();
    let error = |why| WhenError {
        input: trimmed.to_owned(),
        what: "a time",
        why,
    };
    if let Some(relative) = trimmed.strip_prefix('+') {
        let d = parse_duration(relative).map_err(|_| {
            error("after `+` write a number and a unit (ms, s, m, h, d or w), e.g. +30d")
        })?;
        let ms = u64::try_from(d.as_millis()).map_err(|_| error("too far ahead"))?;
        return now_ms.checked_add(ms).ok_or_else(|| error("too far ahead"));
    }
    let parsed = if trimmed.len() == 10 {
        OffsetDateTime::parse(&format!("{trimmed}T00:00:00Z"), &Rfc3339)
    } else {
        OffsetDateTime::parse(trimmed, &Rfc3339)
    };
    let at = parsed.map_err(|_| {
        error("write RFC 3339 (2026-06-30T12:00:00Z), a date (2026-06-30) or +<duration> (+30d)")
    })?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| error("before 1970"))
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-06-30T12:00:00Z`, with
/// milliseconds when there are any).
pub fn format_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A duration for people: `25s`, `3m 20s`, `2d 4h`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.as_millis() > 0 => format!("{}ms", d.as_millis()),
        0..60 => format!("{s}s"),
        60..3_600 => trim_zero(format!("{}m {}s", s / 60, s % 60)),
        3_600..86_400 => trim_zero(format!("{}h {}m", s / 3_600, s % 3_600 / 60)),
        _ => trim_zero(format!("{}d {}h", s / 86_400, s % 86_400 / 3_600)),
    }
}

fn trim_zero(s: String) -> String {
    s.strip_suffix(" 0s")
        .or_else(|| s.strip_suffix(" 0m"))
        .or_else(|| s.strip_suffix(" 0h"))
        .map_or_else(|| s.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn relative_times_count_from_now() {
        assert_eq!(parse_when("+30d", NOW), Ok(NOW + 30 * 86_400_000));
        assert_eq!(parse_when("+90s", NOW), Ok(NOW + 90_000));
        assert_eq!(parse_when("+500ms", NOW), Ok(NOW + 500));
        assert_eq!(parse_when("+2h", NOW), Ok(NOW + 7_200_000));
        assert_eq!(parse_when("+1w", NOW), Ok(NOW + 7 * 86_400_000));
        assert_eq!(parse_when("+15", NOW), Ok(NOW + 15_000));
        for bad in [
            "+",
            "+d",
            "+3x",
            "+-3s",
            "+99999999999999999999d",
            "+18446744073709551615w",
        ] {
            assert!(parse_when(bad, NOW).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rfc3339_and_dates_are_absolute() {
        assert_eq!(parse_when("2026-01-01T00:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_when("2026-01-01T08:00:00+08:00", 0), Ok(NOW));
        assert_eq!(parse_when("2026-01-01T00:00:01.5Z", 0), Ok(NOW + 1_500));
        assert_eq!(parse_when("2026-01-01", 0), Ok(NOW));
        for bad in [
            "tomorrow",
            "2026-13-01",
            "2026-01-01 00:00",
            "1969-12-31T00:00:00Z",
            "",
        ] {
            assert!(parse_when(bad, NOW).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_ms(NOW), "2026-01-01T00:00:00Z");
        assert_eq!(format_ms(NOW + 1_500), "2026-01-01T00:00:01.5Z");
        assert_eq!(parse_when(&format_ms(NOW + 123), 0), Ok(NOW + 123));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "1.5s", "-1s", "3 parsecs", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_duration(Duration::from_secs(25)), "25s");
        assert_eq!(format_duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(
            format_duration(Duration::from_secs(2 * 86_400 + 4 * 3_600)),
            "2d 4h"
        );
    }
}

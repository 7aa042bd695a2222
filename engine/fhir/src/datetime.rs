//! FHIR dates as ranges. `2024`, `2024-03`, `2024-03-05` and `2024-03-05T10:00:00+01:00` each
//! stand for an interval (the whole year, month, day or second); search compares intervals,
//! so the index keeps `[low, high]` in microseconds since the epoch (UTC).

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Inclusive range in microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub low: i64,
    pub high: i64,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN))
}

/// Parses a FHIR date, dateTime or instant (and the `YYYY-MM-DDThh:mm` form search allows).
/// A time without a zone is read as UTC.
pub fn parse(text: &str) -> Option<Range> {
    let t = text.trim();
    if !t.is_ascii() {
        return None;
    }
    match t.len() {
        4 => {
            let y: i32 = t.parse().ok()?;
            let start = NaiveDate::from_ymd_opt(y, 1, 1)?;
            let end = NaiveDate::from_ymd_opt(y + 1, 1, 1)?;
            Some(span(day_start(start), day_start(end)))
        }
        7 => {
            let (y, m) = t.split_once('-')?;
            let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
            let start = NaiveDate::from_ymd_opt(y, m, 1)?;
            let end = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)?
            };
            Some(span(day_start(start), day_start(end)))
        }
        10 => {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
            Some(span(day_start(d), day_start(d.succ_opt()?)))
        }
        _ => date_time(t),
    }
}

/// `[start, end)` as an inclusive microsecond range.
fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> Range {
    Range {
        low: micros(start),
        high: micros(end) - 1,
    }
}

fn date_time(t: &str) -> Option<Range> {
    let (date, time) = t.split_once('T')?;
    if date.len() != 10 {
        return None;
    }
    // Split the zone off: `Z`, `+hh:mm` or `-hh:mm` after the time.
    let (clock, zone) = if let Some(c) = time.strip_suffix('Z') {
        (c, Some("+00:00"))
    } else if time.len() > 6 && matches!(time.as_bytes()[time.len() - 6], b'+' | b'-') {
        (&time[..time.len() - 6], Some(&time[time.len() - 6..]))
    } else {
        (time, None)
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (c, Some(f)),
        Some(_) => return None,
        None => (clock, None),
    };
    let (format, precision) = match clock.len() {
        5 => ("%Y-%m-%dT%H:%M", Duration::minutes(1)),
        8 => ("%Y-%m-%dT%H:%M:%S", Duration::seconds(1)),
        _ => return None,
    };
    let naive = NaiveDateTime::parse_from_str(&format!("{date}T{clock}"), format).ok()?;
    let (naive, precision) = match fraction {
        Some(f) => {
            let digits = f.len().min(6);
            let value: i64 = f[..digits].parse().ok()?;
            let scale = 10i64.pow(6 - digits as u32);
            (
                naive + Duration::microseconds(value * scale),
                Duration::microseconds(scale),
            )
        }
        None => (naive, precision),
    };
    let start = match zone {
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':')?;
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            if h > 14 || m > 59 {
                return None;
            }
            let offset = FixedOffset::east_opt(sign * (h * 3600 + m * 60))?;
            offset
                .from_local_datetime(&naive)
                .single()?
                .with_timezone(&Utc)
        }
        None => Utc.from_utc_datetime(&naive),
    };
    Some(span(start, start + precision))
}

/// An instant as FHIR writes it (`meta.lastUpdated`): UTC, millisecond precision.
pub fn instant(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// HTTP date (`Last-Modified`).
pub fn http_date(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn partial_dates_are_ranges() {
        let y = parse("2024").unwrap();
        assert_eq!(y.low, at("2024-01-01T00:00:00Z"));
        assert_eq!(y.high, at("2025-01-01T00:00:00Z") - 1);
        let m = parse("2024-02").unwrap();
        assert_eq!(m.high, at("2024-03-01T00:00:00Z") - 1);
        let dec = parse("2023-12").unwrap();
        assert_eq!(dec.high, at("2024-01-01T00:00:00Z") - 1);
        let d = parse("2024-02-29").unwrap();
        assert_eq!(d.low, at("2024-02-29T00:00:00Z"));
    }

    #[test]
    fn date_times_with_zones_and_fractions() {
        let t = parse("2024-03-05T10:00:00+01:00").unwrap();
        assert_eq!(t.low, at("2024-03-05T09:00:00Z"));
        assert_eq!(t.high, at("2024-03-05T09:00:01Z") - 1);
        let f = parse("2024-03-05T10:00:00.25Z").unwrap();
        assert_eq!(f.low, at("2024-03-05T10:00:00.25Z"));
        assert_eq!(f.high - f.low, 9_999);
        let m = parse("2024-03-05T10:00").unwrap();
        assert_eq!(m.high - m.low, 60_000_000 - 1);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "20",
            "2024-13",
            "2024-02-30",
            "2024-03-05T25:00:00Z",
            "yesterday",
            "2024-03-05T10:00:00+99:00",
            "2024-03-05T10:00:00.Z",
            "２０２４",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn instants_print_as_fhir() {
        assert_eq!(
            instant(at("2024-03-05T10:00:00.123Z")),
            "2024-03-05T10:00:00.123Z"
        );
        assert_eq!(
            http_date(at("2024-03-05T10:00:00Z")),
            "Tue, 05 Mar 2024 10:00:00 GMT"
        );
    }
}

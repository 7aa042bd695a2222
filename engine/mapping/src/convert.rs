//! Conversions of HL7 v2 text into FHIR primitive values (`as: date`, `as: decimal`...).
//! They produce typed JSON (numbers are numbers, booleans booleans), never text to be
//! cleaned afterwards, and fail loudly on values they cannot read.

use serde_json::{Number, Value};

/// The FHIR primitive types a rule can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    String,
    Code,
    Id,
    Uri,
    Date,
    DateTime,
    Instant,
    Time,
    Decimal,
    Integer,
    PositiveInt,
    UnsignedInt,
    Boolean,
    Base64,
}

impl Primitive {
    pub fn named(name: &str) -> Option<Primitive> {
        Some(match name {
            "string" | "markdown" => Primitive::String,
            "code" => Primitive::Code,
            "id" => Primitive::Id,
            "uri" | "url" | "canonical" | "oid" => Primitive::Uri,
            "date" => Primitive::Date,
            "dateTime" => Primitive::DateTime,
            "instant" => Primitive::Instant,
            "time" => Primitive::Time,
            "decimal" => Primitive::Decimal,
            "integer" => Primitive::Integer,
            "positiveInt" => Primitive::PositiveInt,
            "unsignedInt" => Primitive::UnsignedInt,
            "boolean" => Primitive::Boolean,
            "base64Binary" => Primitive::Base64,
            _ => return None,
        })
    }
}

/// The time zone of times sent without an offset (most HL7 v2 senders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// A fixed offset in minutes east of UTC.
    Fixed(i32),
    /// Central European Time with the EU summer-time rule (last Sunday of March to last
    /// Sunday of October, changing at 01:00 UTC): France, and the rest of the EU's CET area.
    EuropeParis,
}

impl Zone {
    pub fn named(name: &str) -> Option<Zone> {
        match name {
            "Europe/Paris" | "Europe/Brussels" | "Europe/Berlin" | "Europe/Luxembourg" => {
                Some(Zone::EuropeParis)
            }
            "UTC" | "Z" => Some(Zone::Fixed(0)),
            _ => offset_minutes(name).map(Zone::Fixed),
        }
    }

    /// The offset at a local date and time.
    fn offset_at(self, y: i64, mo: u32, d: u32, h: u32) -> i32 {
        match self {
            Zone::Fixed(m) => m,
            Zone::EuropeParis => {
                // Compare in UTC, taking the local time as winter time (+01:00).
                let utc_hours = days_from_civil(y, mo, d) * 24 + i64::from(h) - 1;
                let start = days_from_civil(y, 3, last_sunday(y, 3)) * 24 + 1;
                let end = days_from_civil(y, 10, last_sunday(y, 10)) * 24 + 1;
                if (start..end).contains(&utc_hours) {
                    120
                } else {
                    60
                }
            }
        }
    }
}

fn offset_minutes(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn last_sunday(y: i64, m: u32) -> u32 {
    let last = days_in_month(y, m);
    // 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) mod 7.
    let weekday = (days_from_civil(y, m, last) + 4).rem_euclid(7) as u32;
    last - weekday
}

/// The parts of an HL7 DTM/TS value: `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+-ZZZZ]`.
struct Dtm<'a> {
    digits: &'a str,
    fraction: &'a str,
    offset: Option<i32>,
}

fn read_dtm(text: &str) -> Result<Dtm<'_>, String> {
    // TS carries a precision indicator in a second component (`^D`), already split off.
    let t = text.trim();
    let (main, offset) = match t.find(['+', '-']) {
        Some(i) => (
            &t[..i],
            Some(offset_minutes(&t[i..]).ok_or_else(|| format!("`{t}`: bad time zone"))?),
        ),
        None => (t, None),
    };
    let (digits, fraction) = main.split_once('.').unwrap_or((main, ""));
    let bad = || format!("`{t}` is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])");
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (!fraction.is_empty() && digits.len() != 14)
    {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map(|s| s.parse::<u32>().unwrap_or(0));
    let y = n(0..4).unwrap_or(0) as i64;
    if let Some(m) = n(4..6)
        && !(1..=12).contains(&m)
    {
        return Err(bad());
    }
    if let (Some(m), Some(d)) = (n(4..6), n(6..8))
        && (d == 0 || d > days_in_month(y, m))
    {
        return Err(bad());
    }
    if n(8..10).is_some_and(|h| h > 23)
        || n(10..12).is_some_and(|m| m > 59)
        || n(12..14).is_some_and(|s| s > 59)
    {
        return Err(bad());
    }
    Ok(Dtm {
        digits,
        fraction,
        offset,
    })
}

// Dates and times are built by pushing slices, not with `format!`: a message has several and
// the formatting machinery costs more than the rest of the conversion.

fn date_part(d: &str) -> String {
    let mut out = String::with_capacity(10);
    push_date(&mut out, d);
    out
}

fn push_date(out: &mut String, d: &str) {
    out.push_str(&d[..4]);
    if d.len() >= 6 {
        out.push('-');
        out.push_str(&d[4..6]);
    }
    if d.len() >= 8 {
        out.push('-');
        out.push_str(&d[6..8]);
    }
}

fn push_two_digits(out: &mut String, n: i32) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

fn push_offset(out: &mut String, minutes: i32) {
    if minutes == 0 {
        out.push('Z');
        return;
    }
    out.push(if minutes < 0 { '-' } else { '+' });
    let m = minutes.abs();
    push_two_digits(out, m / 60);
    out.push(':');
    push_two_digits(out, m % 60);
}

fn date_time(text: &str, zone: Zone, instant: bool) -> Result<String, String> {
    let dtm = read_dtm(text)?;
    let d = dtm.digits;
    if d.len() < 10 {
        if instant {
            return Err(format!("`{text}` has no time: an instant needs one"));
        }
        return Ok(date_part(d));
    }
    let pad = |r: std::ops::Range<usize>| d.get(r).unwrap_or("00");
    let (y, mo, day, h) = (
        d[..4].parse().unwrap_or(1970),
        d[4..6].parse().unwrap_or(1),
        d[6..8].parse().unwrap_or(1),
        d[8..10].parse().unwrap_or(0),
    );
    let offset = dtm.offset.unwrap_or_else(|| zone.offset_at(y, mo, day, h));
    let mut out = String::with_capacity(32);
    push_date(&mut out, &d[..8]);
    out.push('T');
    out.push_str(&d[8..10]);
    out.push(':');
    out.push_str(pad(10..12));
    out.push(':');
    out.push_str(pad(12..14));
    if !dtm.fraction.is_empty() {
        out.push('.');
        out.push_str(dtm.fraction);
    }
    push_offset(&mut out, offset);
    Ok(out)
}

fn number(text: &str) -> Result<Number, String> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let body = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{text}` is not a number"));
    }
    if frac.is_empty()
        && let Ok(i) = t.parse::<i64>()
    {
        return Ok(Number::from(i));
    }
    t.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// Base64 as FHIR wants it: line breaks and spaces removed, the padding senders often leave
/// out restored; anything else than the base64 alphabet is an error.
fn base64(text: &str) -> Result<String, String> {
    let mut out: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let body = out.trim_end_matches('=');
    if let Some(bad) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
    {
        return Err(format!("`{bad}` is not a base64 character"));
    }
    if body.len() % 4 == 1 {
        return Err("base64 data of an impossible length (one character too many)".into());
    }
    let len = body.len();
    out.truncate(len);
    out.extend(std::iter::repeat_n('=', (4 - len % 4) % 4));
    Ok(out)
}

/// Converts one non-empty text to the primitive, or says why it cannot.
/// [`convert`], with None for a value that comes out empty (a code of blanks): FHIR allows
/// no empty value, and mappings produce nothing for it, as for an absent one.
pub fn typed(text: &str, to: Primitive, zone: Zone) -> Result<Option<Value>, String> {
    let v = convert(text, to, zone)?;
    Ok((v.as_str() != Some("")).then_some(v))
}

pub fn convert(text: &str, to: Primitive, zone: Zone) -> Result<Value, String> {
    Ok(match to {
        Primitive::String | Primitive::Uri => Value::String(text.to_string()),
        Primitive::Base64 => Value::String(base64(text)?),
        Primitive::Code | Primitive::Id => Value::String(text.trim().to_string()),
        Primitive::Date => {
            let d = read_dtm(text)?.digits;
            Value::String(date_part(&d[..d.len().min(8)]))
        }
        Primitive::DateTime => Value::String(date_time(text, zone, false)?),
        Primitive::Instant => Value::String(date_time(text, zone, true)?),
        Primitive::Time => {
            let t = text.trim();
            if !matches!(t.len(), 2 | 4 | 6) || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{t}` is not an HL7 time (HH[MM[SS]])"));
            }
            let p = |r: std::ops::Range<usize>| t.get(r).unwrap_or("00");
            Value::String(format!("{}:{}:{}", p(0..2), p(2..4), p(4..6)))
        }
        Primitive::Decimal => Value::Number(number(text)?),
        Primitive::Integer | Primitive::PositiveInt | Primitive::UnsignedInt => {
            let n = number(text)?;
            let i = n
                .as_i64()
                .ok_or_else(|| format!("`{text}` is not a whole number"))?;
            if (to == Primitive::PositiveInt && i < 1) || (to == Primitive::UnsignedInt && i < 0) {
                return Err(format!("`{text}` is out of range"));
            }
            Value::Number(i.into())
        }
        Primitive::Boolean => match text.trim() {
            // Table 0136 is Y/N; some senders write the words.
            "Y" | "y" | "T" | "1" | "true" | "YES" | "Yes" => Value::Bool(true),
            "N" | "n" | "F" | "0" | "false" | "NO" | "No" => Value::Bool(false),
            other => return Err(format!("`{other}` is not a yes/no value (Y or N)")),
        },
    })
}

/// The civil date of a day count since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A FHIR dateTime with a time (`2024-12-02T14:30:00+01:00`, as `convert` makes them) plus
/// some minutes, in the same offset: an appointment's end from its start and duration.
pub fn add_minutes(date_time: &str, minutes: i64) -> Result<String, String> {
    let bad = || format!("`{date_time}` is not a date and time to add minutes to");
    let (date, rest) = date_time.split_once('T').ok_or_else(bad)?;
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let (h, mi) = (num(rest.get(0..2))?, num(rest.get(3..5))?);
    let tail = rest.get(5..).ok_or_else(bad)?;
    let total = days_from_civil(y, mo as u32, day as u32) * 1440 + h * 60 + mi + minutes;
    let (y, mo, day) = civil_from_days(total.div_euclid(1440));
    let m = total.rem_euclid(1440);
    Ok(format!(
        "{y:04}-{mo:02}-{day:02}T{:02}:{:02}{tail}",
        m / 60,
        m % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str, to: Primitive) -> String {
        match convert(text, to, Zone::EuropeParis).unwrap() {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    #[test]
    fn dates_and_times() {
        let cases = [
            ("19600512", Primitive::Date, "1960-05-12"),
            ("196005121030", Primitive::Date, "1960-05-12"),
            ("1960", Primitive::DateTime, "1960"),
            // Winter and summer time in Paris; an explicit offset wins.
            (
                "202401151030",
                Primitive::DateTime,
                "2024-01-15T10:30:00+01:00",
            ),
            (
                "20240715103005.25",
                Primitive::DateTime,
                "2024-07-15T10:30:05.25+02:00",
            ),
            (
                "202407151030-0500",
                Primitive::DateTime,
                "2024-07-15T10:30:00-05:00",
            ),
            // 2024: summer time from 31 March 01:00 UTC (03:00 local) to 27 October 01:00 UTC.
            (
                "2024033101",
                Primitive::DateTime,
                "2024-03-31T01:00:00+01:00",
            ),
            (
                "2024033104",
                Primitive::DateTime,
                "2024-03-31T04:00:00+02:00",
            ),
            (
                "2024102704",
                Primitive::DateTime,
                "2024-10-27T04:00:00+01:00",
            ),
        ];
        for (text, to, want) in cases {
            assert_eq!(s(text, to), want, "{text}");
        }
        for bad in [
            "2024131",
            "20241301",
            "20240230",
            "202401151090",
            "abc",
            "2024-01-01",
        ] {
            assert!(
                convert(bad, Primitive::DateTime, Zone::EuropeParis).is_err(),
                "{bad}"
            );
        }
        assert!(convert("20240115", Primitive::Instant, Zone::Fixed(0)).is_err());
        assert_eq!(
            convert("202401151030", Primitive::Instant, Zone::Fixed(0)).unwrap(),
            "2024-01-15T10:30:00Z"
        );
    }

    #[test]
    fn minutes_are_added_across_days_and_months() {
        assert_eq!(
            add_minutes("2024-12-02T14:30:00+01:00", 30).unwrap(),
            "2024-12-02T15:00:00+01:00"
        );
        assert_eq!(
            add_minutes("2024-02-28T23:50:05.5Z", 20).unwrap(),
            "2024-02-29T00:10:05.5Z"
        );
        assert_eq!(
            add_minutes("2024-12-31T23:00:00+01:00", 90).unwrap(),
            "2025-01-01T00:30:00+01:00"
        );
        assert!(add_minutes("2024-12-31", 5).is_err());
    }

    #[test]
    fn base64_is_cleaned_and_padded() {
        let b = |t: &str| convert(t, Primitive::Base64, Zone::Fixed(0));
        assert_eq!(b("PD94\nbWw").unwrap(), "PD94bWw=");
        assert_eq!(b("QQ").unwrap(), "QQ==");
        assert_eq!(b("QUJD").unwrap(), "QUJD");
        assert!(b("QU*D").is_err());
        assert!(b("QUJDR").is_err());
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(
            convert("+12", Primitive::Decimal, Zone::Fixed(0)).unwrap(),
            12
        );
        assert_eq!(
            convert("-0.5", Primitive::Decimal, Zone::Fixed(0)).unwrap(),
            -0.5
        );
        assert!(convert("1,5", Primitive::Decimal, Zone::Fixed(0)).is_err());
        assert!(convert("0", Primitive::PositiveInt, Zone::Fixed(0)).is_err());
        assert_eq!(
            convert("Y", Primitive::Boolean, Zone::Fixed(0)).unwrap(),
            true
        );
        assert!(convert("maybe", Primitive::Boolean, Zone::Fixed(0)).is_err());
        assert_eq!(Zone::named("+05:30"), Some(Zone::Fixed(330)));
        assert_eq!(Zone::named("Mars/Olympus"), None);
    }
}

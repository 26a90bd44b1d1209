//! Reading the HTTP-date of a `date` or `x-date` header.
//!
//! Oracle's documented signing example carries `Thu, 05 Jan 2014 21:31:40 GMT`,
//! a Sunday, and the service verifies such dates: the weekday is not checked, so a
//! strict parser would reject a date the service accepts. This reads an IMF-fixdate
//! with any weekday name, and the obsolete RFC 850 and asctime forms through
//! `httpdate`.

use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};

/// First second of the year 10000: an HTTP-date has exactly four year digits.
const YEAR_10000_SECS: u64 = 253_402_300_800;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Formats `time` as an IMF-fixdate.
///
/// # Errors
/// [`ErrorKind::InvalidDate`] for a time before 1970 or from the year 10000, which an
/// HTTP-date cannot express (`httpdate` would panic on them; a `Clock` may return
/// anything).
pub(crate) fn format(time: SystemTime) -> Result<String> {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000_SECS => Ok(httpdate::fmt_http_date(time)),
        _ => Err(Error::new(
            ErrorKind::InvalidDate,
            "signing time is outside the years 1970 to 9999 that an http-date can express; check the clock",
        )),
    }
}

/// Parses an HTTP-date; the weekday of an IMF-fixdate is not checked.
pub(crate) fn parse(value: &str) -> Option<SystemTime> {
    parse_imf_fixdate(value).or_else(|| httpdate::parse_http_date(value).ok())
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    let (weekday, rest) = value.split_once(", ")?;
    if !WEEKDAYS.contains(&weekday) || rest.len() != 24 {
        return None;
    }
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || day.len() != 2 || year.len() != 4 || time.len() != 8 {
        return None;
    }
    let day = num(day)?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year = num(year)?;
    let mut hms = time.split(':');
    let (h, m, s) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
    if year < 1970 || !(1..=days_in_month(year, month)).contains(&day) || h > 23 || m > 59 || s > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let leap_days = |y: u64| y / 4 - y / 100 + y / 400;
    let years = year - 1970;
    let mut days = years * 365 + leap_days(year - 1) - leap_days(1969);
    for m in 1..month {
        days += days_in_month(year, m);
    }
    days + day - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_oracles_example_with_its_wrong_weekday() {
        let t = parse("Thu, 05 Jan 2014 21:31:40 GMT");
        assert_eq!(
            t,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_388_957_500))
        );
    }

    #[test]
    fn agrees_with_httpdate_on_many_dates() {
        for secs in (0..4_000_000_000u64).step_by(7_777_777) {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let formatted = httpdate::fmt_http_date(t);
            assert_eq!(parse(&formatted), Some(t), "{formatted}");
        }
    }

    #[test]
    fn formats_only_the_years_an_http_date_can_hold() {
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            format(at(0)).ok().as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(
            format(at(YEAR_10000_SECS - 1)).ok().as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
        for t in [
            at(YEAR_10000_SECS),
            SystemTime::UNIX_EPOCH - Duration::from_nanos(1),
        ] {
            let err = format(t).err().map(|e| e.kind());
            assert_eq!(err, Some(ErrorKind::InvalidDate));
        }
    }

    #[test]
    fn rejects_non_dates() {
        for v in [
            "",
            "yesterday",
            "Thu, 32 Jan 2014 21:31:40 GMT",
            "Thu, 29 Feb 2014 21:31:40 GMT",
            "Thu, 05 Jan 2014 24:31:40 GMT",
            "Thu, 05 Jan 2014 21:31:40 UTC",
            "Xyz, 05 Jan 2014 21:31:40 GMT",
            "Thu, 05 Jan 2014 21:31:40 GMT ",
        ] {
            assert_eq!(parse(v), None, "{v:?}");
        }
    }
}

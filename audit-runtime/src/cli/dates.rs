//! The dates commands take (`dd/mm/yyyy`, the original's format, or `yyyy-mm-dd`, optionally with
//! `THH:MM`), all in UTC, and the ranges and filters built from them.

use super::CliError;
use crate::document::Collection;
use crate::store::Filter;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};

/// An inclusive time range.
pub type Range = (DateTime<Utc>, DateTime<Utc>);

/// Parses `dd/mm/yyyy` (the original's format) or `yyyy-mm-dd`.
pub fn parse_day(s: &str) -> Result<NaiveDate, CliError> {
    NaiveDate::parse_from_str(s, "%d/%m/%Y")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
        .map_err(|_| CliError::InvalidDate(s.to_owned()))
}

/// Parses `DATE` or `DATETHH:MM`; a bare date is the start of the day, or its end with `end_of_day`.
pub fn parse_moment(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, CliError> {
    let (day, time) = match s.split_once('T') {
        Some((d, t)) => {
            let t = NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| CliError::InvalidTime(s.to_owned()))?;
            (d, Some(t))
        }
        None => (s, None),
    };
    let day = parse_day(day)?;
    let at = match time {
        Some(t) => day.and_time(t),
        None if end_of_day => {
            day.and_time(NaiveTime::from_hms_milli_opt(23, 59, 59, 999).expect("valid time"))
        }
        None => day.and_time(NaiveTime::MIN),
    };
    Ok(Utc.from_utc_datetime(&at))
}

/// The range of `drop`: none → everything; one date → from its 00:00 to now; two →
/// from the first's 00:00 to the end of the second. END before INIT is a usage error.
pub fn drop_range(
    init: Option<&str>,
    end: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<Range>, CliError> {
    let Some(init) = init else { return Ok(None) };
    let from = parse_moment(init, false)?;
    let to = match end {
        Some(e) => parse_moment(e, true)?,
        None => now,
    };
    if to < from {
        return Err(CliError::EndBeforeInit {
            init: from.date_naive(),
            end: to.date_naive(),
        });
    }
    Ok(Some((from, to)))
}

/// The records of `c` dated from `from` (a moment) up to `to` (a bare date: to its end).
pub(super) fn date_filter(
    c: Collection,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Filter, CliError> {
    let mut parts = Vec::new();
    if let Some(f) = from {
        parts.push(Filter::gte(
            c.date_field(),
            bson::DateTime::from_chrono(parse_moment(f, false)?),
        ));
    }
    if let Some(t) = to {
        parts.push(Filter::lte(
            c.date_field(),
            bson::DateTime::from_chrono(parse_moment(t, true)?),
        ));
    }
    Ok(Filter::And(parts))
}

/// The records of `c` dated inside `range`.
pub(super) fn in_range(c: Collection, range: &Range) -> Filter {
    Filter::between(
        c.date_field(),
        bson::DateTime::from_chrono(range.0),
        bson::DateTime::from_chrono(range.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_day_formats_and_the_end_of_a_day() {
        let d = NaiveDate::from_ymd_opt(2000, 2, 1).unwrap();
        assert_eq!(parse_day("01/02/2000").unwrap(), d);
        assert_eq!(parse_day("2000-02-01").unwrap(), d);
        assert!(matches!(
            parse_day("31/02/2000"),
            Err(CliError::InvalidDate(s)) if s == "31/02/2000"
        ));
        let end = parse_moment("2000-02-01", true).unwrap();
        assert_eq!(end.to_rfc3339(), "2000-02-01T23:59:59.999+00:00");
        let at = parse_moment("2000-02-01T08:30", true).unwrap();
        assert_eq!(at.to_rfc3339(), "2000-02-01T08:30:00+00:00");
        assert!(matches!(
            parse_moment("2000-02-01T8h", false),
            Err(CliError::InvalidTime(_))
        ));
    }

    #[test]
    fn drop_ranges() {
        let now = Utc.with_ymd_and_hms(2020, 5, 5, 12, 0, 0).unwrap();
        assert_eq!(drop_range(None, None, now).unwrap(), None);
        let (from, to) = drop_range(Some("01/01/2020"), None, now).unwrap().unwrap();
        assert_eq!(
            (from.to_rfc3339().as_str(), to),
            ("2020-01-01T00:00:00+00:00", now)
        );
        let e = drop_range(Some("02/01/2020"), Some("01/01/2020"), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "END_DATE is before INIT_DATE (2020-01-01 < 2020-01-02)"
        );
        assert_eq!(e.exit_code(), 2);
    }
}

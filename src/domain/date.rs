//! Calendar dates in Japan. Forms give dates as `YYYY-MM-DD` meaning a day in Japan Standard Time (UTC+9, no
//! daylight saving time), so every conversion between a date and an instant goes through the fixed JST offset,
//! never through the host's local time zone or a tz database.
//!
//! Access granted "from" a date starts at 00:00 JST of that date; access granted "until" a date lasts through
//! that whole day, so it ends at 00:00 JST of the following day.

use jiff::{
    Span, Timestamp,
    civil::{Date, Time},
    tz::Offset,
};

/// Offset of Japan Standard Time from UTC, in hours. Japan has had no daylight saving time since 1951.
pub const JST_OFFSET_HOURS: i8 = 9;

/// Japan Standard Time as a fixed offset.
pub const JST: Offset = Offset::constant(JST_OFFSET_HOURS);

/// The format every date in a form must follow, shown in error messages.
const FORMAT_HINT: &str = "YYYY-MM-DD, e.g. 2026-04-01";

/// Why a string is not a calendar date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not ten characters of the shape `DDDD-DD-DD` with ASCII digits.
    #[error("{text:?} is not a date in the form {FORMAT_HINT} (four-digit year, two-digit month and day)")]
    WrongFormat {
        /// The text as given.
        text: String,
    },
    /// Year 0000: there is no such year in the calendar people use.
    #[error("{text} has year 0000; write a year from 0001 to 9999 ({FORMAT_HINT})")]
    YearOutOfRange {
        /// The text as given.
        text: String,
    },
    /// Month 00 or 13-99.
    #[error("{text} has month {month:02}, which does not exist; write a month from 01 to 12 ({FORMAT_HINT})")]
    MonthOutOfRange {
        /// The text as given.
        text: String,
        /// The month as given.
        month: u8,
    },
    /// Day 00, or a day past the end of that month (2026-02-30, 2026-04-31, 2027-02-29).
    #[error("{text} is not a calendar date: {year:04}-{month:02} has days 01 to {days_in_month} ({FORMAT_HINT})")]
    DayOutOfRange {
        /// The text as given.
        text: String,
        /// The year as given.
        year: i16,
        /// The month as given.
        month: u8,
        /// The day as given.
        day: u8,
        /// How many days that month has in that year.
        days_in_month: u8,
    },
}

/// Parses a date written exactly as `YYYY-MM-DD` (ASCII digits, zero-padded, no time or offset, no surrounding
/// whitespace) and checks that it is a real calendar date: `2026-02-30` is refused, `2028-02-29` is accepted.
pub fn parse_jst_date(text: &str) -> Result<Date, DateError> {
    let wrong_format = || DateError::WrongFormat { text: text.to_string() };
    let bytes = text.as_bytes();
    // Checking the shape byte by byte refuses signs, extra digits, full-width digits and `2026-4-1` alike, which
    // a general-purpose parser would either accept or report less clearly.
    let shape_ok = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(wrong_format());
    }
    let number = |range: std::ops::Range<usize>| -> u16 { bytes[range].iter().fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0')) };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // At most 9999, 99 and 99, so these conversions cannot fail.
    let year = i16::try_from(year).map_err(|_| wrong_format())?;
    let month = u8::try_from(month).map_err(|_| wrong_format())?;
    let day = u8::try_from(day).map_err(|_| wrong_format())?;
    if year == 0 {
        return Err(DateError::YearOutOfRange { text: text.to_string() });
    }
    if !(1..=12).contains(&month) {
        return Err(DateError::MonthOutOfRange { text: text.to_string(), month });
    }
    let month_i8 = i8::try_from(month).map_err(|_| wrong_format())?;
    let first = Date::new(year, month_i8, 1).map_err(|_| wrong_format())?;
    let days_in_month = u8::try_from(first.days_in_month()).map_err(|_| wrong_format())?;
    if day == 0 || day > days_in_month {
        return Err(DateError::DayOutOfRange { text: text.to_string(), year, month, day, days_in_month });
    }
    let day_i8 = i8::try_from(day).map_err(|_| wrong_format())?;
    Date::new(year, month_i8, day_i8).map_err(|_| wrong_format())
}

/// The instant 00:00 JST of `date`, which is 15:00 UTC of the day before.
///
/// For dates at the very edge of jiff's range (around year −9999) the instant does not exist and the earliest
/// representable instant is returned instead; such dates cannot come out of [`parse_jst_date`].
pub fn start_of_day_jst(date: Date) -> Timestamp {
    JST.to_timestamp(date.to_datetime(Time::midnight())).unwrap_or(Timestamp::MIN)
}

/// The instant access granted "until `date`" ends: 00:00 JST of the following day, so the whole of `date` in
/// Japan is included.
///
/// For 9999-12-31, whose next day is outside jiff's range, the latest representable instant is returned, which
/// is still after [`start_of_day_jst`] of that date.
pub fn end_of_day_jst(date: Date) -> Timestamp {
    // Computed from the start of the day rather than from `date.tomorrow()`, so the last representable date
    // still gets an end; JST has no DST, so every day is exactly 24 hours long.
    start_of_day_jst(date).checked_add(jiff::SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX)
}

/// The calendar date in Japan at `instant`.
pub fn jst_date_of(instant: Timestamp) -> Date {
    JST.to_datetime(instant).date()
}

/// `date` moved by `days` calendar days (negative moves back), e.g. a receipt date plus a lead time of 7 days.
///
/// Saturates at [`Date::MIN`] / [`Date::MAX`] instead of failing, since a lead time can never sensibly reach
/// either end.
pub fn add_days(date: Date, days: i64) -> Date {
    let saturated = if days >= 0 { Date::MAX } else { Date::MIN };
    match Span::new().try_days(days) {
        Ok(span) => date.checked_add(span).unwrap_or(saturated),
        Err(_) => saturated,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn parses_real_dates() {
        assert_eq!(parse_jst_date("2026-04-01"), Ok(date(2026, 4, 1)));
        assert_eq!(parse_jst_date("2028-02-29"), Ok(date(2028, 2, 29)));
        assert_eq!(parse_jst_date("2000-02-29"), Ok(date(2000, 2, 29)));
        assert_eq!(parse_jst_date("2031-03-31"), Ok(date(2031, 3, 31)));
        assert_eq!(parse_jst_date("0001-01-01"), Ok(date(1, 1, 1)));
        assert_eq!(parse_jst_date("9999-12-31"), Ok(date(9999, 12, 31)));
    }

    #[test]
    fn refuses_impossible_dates() {
        let err = parse_jst_date("2026-02-30").unwrap_err();
        assert_eq!(err, DateError::DayOutOfRange { text: "2026-02-30".into(), year: 2026, month: 2, day: 30, days_in_month: 28 });
        let msg = err.to_string();
        assert!(msg.contains("2026-02 has days 01 to 28"), "{msg}");
        assert!(msg.contains("YYYY-MM-DD"), "{msg}");
        assert!(matches!(parse_jst_date("2027-02-29"), Err(DateError::DayOutOfRange { .. })));
        assert!(matches!(parse_jst_date("1900-02-29"), Err(DateError::DayOutOfRange { .. })));
        assert!(matches!(parse_jst_date("2026-04-31"), Err(DateError::DayOutOfRange { .. })));
        assert!(matches!(parse_jst_date("2026-04-00"), Err(DateError::DayOutOfRange { .. })));
        assert!(matches!(parse_jst_date("2026-13-01"), Err(DateError::MonthOutOfRange { month: 13, .. })));
        assert!(matches!(parse_jst_date("2026-00-10"), Err(DateError::MonthOutOfRange { month: 0, .. })));
        assert!(matches!(parse_jst_date("0000-01-01"), Err(DateError::YearOutOfRange { .. })));
    }

    #[test]
    fn refuses_other_formats() {
        for text in [
            "",
            "2026-4-1",
            "2026/04/01",
            "20260401",
            " 2026-04-01",
            "2026-04-01 ",
            "2026-04-01T00:00",
            "2026-04-01+09:00",
            "+2026-04-01",
            "12026-04-01",
            "２０２６-04-01",
            "2026-04-0１",
            "令和8年4月1日",
            "2026-0a-01",
        ] {
            let err = parse_jst_date(text).unwrap_err();
            assert_eq!(err, DateError::WrongFormat { text: text.into() }, "{text}");
            assert!(err.to_string().contains("YYYY-MM-DD"));
        }
    }

    #[test]
    fn start_and_end_of_day_are_midnight_jst() {
        let d = date(2026, 4, 1);
        assert_eq!(start_of_day_jst(d), ts("2026-03-31T15:00:00Z"));
        assert_eq!(end_of_day_jst(d), ts("2026-04-01T15:00:00Z"));
        // Across a month and a leap day.
        assert_eq!(end_of_day_jst(date(2028, 2, 28)), start_of_day_jst(date(2028, 2, 29)));
        assert_eq!(end_of_day_jst(date(2026, 12, 31)), ts("2026-12-31T15:00:00Z"));
    }

    #[test]
    fn jst_date_at_the_utc_boundary() {
        assert_eq!(jst_date_of(ts("2026-03-31T14:59:59.999999999Z")), date(2026, 3, 31));
        assert_eq!(jst_date_of(ts("2026-03-31T15:00:00Z")), date(2026, 4, 1));
        assert_eq!(jst_date_of(ts("2026-04-01T00:00:00Z")), date(2026, 4, 1));
        assert_eq!(jst_date_of(ts("2026-04-01T14:59:59Z")), date(2026, 4, 1));
        assert_eq!(jst_date_of(ts("2026-04-01T15:00:00Z")), date(2026, 4, 2));
        // An offset in the input does not matter, only the instant.
        assert_eq!(jst_date_of(ts("2026-04-01T00:00:00+09:00")), date(2026, 4, 1));
    }

    #[test]
    fn date_round_trips_through_its_day() {
        for d in [date(2026, 4, 1), date(2028, 2, 29), date(1970, 1, 1), date(2099, 12, 31)] {
            assert_eq!(jst_date_of(start_of_day_jst(d)), d);
            assert_eq!(jst_date_of(end_of_day_jst(d)), add_days(d, 1));
            let last_instant = end_of_day_jst(d).checked_sub(jiff::SignedDuration::from_nanos(1)).unwrap();
            assert_eq!(jst_date_of(last_instant), d);
        }
    }

    #[test]
    fn add_days_moves_calendar_days() {
        assert_eq!(add_days(date(2026, 3, 28), 7), date(2026, 4, 4));
        assert_eq!(add_days(date(2028, 2, 25), 7), date(2028, 3, 3));
        assert_eq!(add_days(date(2026, 4, 1), -1), date(2026, 3, 31));
        assert_eq!(add_days(date(2026, 4, 1), 0), date(2026, 4, 1));
        assert_eq!(add_days(date(9999, 12, 30), 7), Date::MAX);
        assert_eq!(add_days(date(2026, 4, 1), i64::MAX), Date::MAX);
        assert_eq!(add_days(date(2026, 4, 1), i64::MIN), Date::MIN);
    }

    #[test]
    fn extreme_dates_saturate_without_panicking() {
        let last = date(9999, 12, 31);
        assert!(end_of_day_jst(last) > start_of_day_jst(last));
        assert_eq!(end_of_day_jst(last), Timestamp::MAX);
        assert_eq!(start_of_day_jst(Date::MIN), Timestamp::MIN);
        let _ = jst_date_of(Timestamp::MIN);
        let _ = jst_date_of(Timestamp::MAX);
    }
}

//! Calendar arithmetic for listings: civil date and time (UTC) to Unix seconds, without a
//! time-zone database. Years come from mirrors' listings and trace files, so they are bounded
//! (a year outside [`YEARS`] is no date) and every step is checked: never a wrong value, never
//! an overflow.

use std::ops::RangeInclusive;

/// The years a listing may name.
pub const YEARS: RangeInclusive<i64> = 1..=9999;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm); `None`
/// when the year is outside [`YEARS`] or the month outside 1–12.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !YEARS.contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?.checked_add(doe - 719_468)
}

/// Unix seconds of a UTC civil time, or `None` when a field is out of range.
pub fn unix(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    days_from_civil(year, month, day)?
        .checked_mul(86_400)?
        .checked_add(i64::from(hour * 3600 + minute * 60 + second))
}

/// A month from its English three-letter abbreviation.
pub fn month_from_abbrev(s: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let s = s.get(..3)?.to_ascii_lowercase();
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(unix(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix(2000, 3, 1, 0, 0, 0), Some(951_868_800));
        assert_eq!(unix(2026, 11, 22, 1, 2, 3), Some(1_795_309_323));
        assert_eq!(unix(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(month_from_abbrev("Nov"), Some(11));
        assert_eq!(month_from_abbrev("xx"), None);
    }

    #[test]
    fn absurd_years_are_no_date() {
        // Found by fuzzing: years from hostile listings overflowed the day count.
        assert_eq!(unix(2_000_000_000_000, 1, 2, 1, 2, 3), None);
        assert_eq!(unix(751_255_125_555, 11, 2, 2, 2, 3), None);
        assert_eq!(unix(i64::MIN, 1, 1, 0, 0, 0), None);
        assert_eq!(unix(0, 1, 1, 0, 0, 0), None);
        assert_eq!(unix(9999, 12, 31, 23, 59, 59), Some(253_402_300_799));
        assert_eq!(days_from_civil(1970, 0, 1), None);
    }
}

//! Trace and timestamp files, which a mirror's sync job rewrites on every successful sync:
//! Debian's `project/trace/<host>` (first line the output of `date -u`, e.g.
//! `Sat Nov 22 01:02:03 UTC 2026`), or a file holding Unix seconds (`TIME`). Both give the
//! time the mirror last synced.

use super::time;

/// Parses a trace file's content into Unix seconds.
pub fn parse(text: &str) -> Option<i64> {
    let first = text.lines().next()?.trim();
    if let Some(n) = first
        .split_whitespace()
        .next()
        .and_then(|t| t.parse::<i64>().ok())
    {
        return (n > 0).then_some(n);
    }
    // `date -u` output: Www Mmm dd HH:MM:SS UTC YYYY (the zone may also be "GMT" or "+0000").
    let parts: Vec<&str> = first.split_whitespace().collect();
    if parts.len() < 5 {
        return None;
    }
    let month = time::month_from_abbrev(parts[1])?;
    let day: u32 = parts[2].parse().ok()?;
    let clock: Vec<u32> = parts[3]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let year: i64 = parts.last()?.parse().ok()?;
    if clock.len() != 3 {
        return None;
    }
    // A sync before 1970 is no sync time (as for the numeric form).
    time::unix(year, month, day, clock[0], clock[1], clock[2]).filter(|t| *t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_unix_traces() {
        assert_eq!(
            parse("Sun Nov 22 01:02:03 UTC 2026\nCreator: ftpsync\n"),
            Some(1_795_309_323)
        );
        assert_eq!(parse("1795309323\n"), Some(1_795_309_323));
        assert_eq!(parse("<html>nope</html>"), None);
        assert_eq!(parse(""), None);
        // Found by fuzzing: an absurd year overflowed the day count.
        assert_eq!(parse("t Nov 2 2:2:3 751255125555"), None);
        // Found by fuzzing: a year before 1970 gave a negative sync time.
        assert_eq!(
            parse("Sun Nov 22 01:01:03 UTC 1013\nCreator: ftpsync\n"),
            None
        );
    }
}

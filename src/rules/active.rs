//! `active:`: when a rule is live. Dates, times of day (overnight ranges included) and days
//! of the week, in an IANA time zone (jiff, with its time zone database built in, so that
//! a container without `/usr/share/zoneinfo` works). No IO after load.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The time zone of `active` windows when the file names none.
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

/// A compiled window: every part given must hold.
#[derive(Debug, Clone)]
pub struct Active {
    /// Unix seconds, start included.
    from: Option<i64>,
    /// Unix seconds, end excluded (the second after the last one `until` names).
    until: Option<i64>,
    /// Minutes of the day `(start, end)`, start included and end not; `end <= start` runs
    /// overnight.
    hours: Vec<(u16, u16)>,
    /// Bit `n` for weekday `n` (Monday 0); 0 means every day.
    weekdays: u8,
    tz: TimeZone,
}

impl Active {
    /// The window in words: `weekdays Mon-Fri, 18:00-09:00 (Asia/Shanghai)`.
    pub fn words(&self) -> String {
        let mut parts = Vec::new();
        let day = |secs: i64| {
            jiff::Timestamp::from_second(secs)
                .map(|t| {
                    t.to_zoned(self.tz.clone())
                        .strftime("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|_| secs.to_string())
        };
        if let Some(from) = self.from {
            parts.push(format!("from {}", day(from)));
        }
        if let Some(until) = self.until {
            parts.push(format!("until {}", day(until)));
        }
        if self.weekdays != 0 {
            const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
            let days: Vec<&str> = (0..7)
                .filter(|d| self.weekdays & (1 << d) != 0)
                .map(|d| NAMES[d])
                .collect();
            parts.push(days.join(","));
        }
        for (start, end) in &self.hours {
            parts.push(format!(
                "{:02}:{:02}-{:02}:{:02}",
                start / 60,
                start % 60,
                end / 60,
                end % 60
            ));
        }
        let tz = self.tz.iana_name().unwrap_or("UTC");
        format!("{} ({tz})", parts.join(", "))
    }

    /// Whether the window holds at `now` (unix seconds).
    pub fn holds(&self, now: u64) -> bool {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        if self.from.is_some_and(|from| now < from) || self.until.is_some_and(|until| now >= until)
        {
            return false;
        }
        if self.hours.is_empty() && self.weekdays == 0 {
            return true;
        }
        let Ok(at) = Timestamp::from_second(now) else {
            return false;
        };
        let local = at.to_zoned(self.tz.clone()).datetime();
        if self.weekdays != 0 {
            let day = local.weekday().to_monday_zero_offset();
            if self.weekdays & (1 << day) == 0 {
                return false;
            }
        }
        if self.hours.is_empty() {
            return true;
        }
        let minute =
            u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        self.hours.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&minute)
            } else {
                minute >= start || minute < end
            }
        })
    }

    /// The end of the window, if it has one: `check` warns when it has passed.
    pub fn until(&self) -> Option<i64> {
        self.until
    }
}

/// The parts of an `active:` as written.
pub struct Written<'a> {
    pub from: Option<&'a str>,
    pub until: Option<&'a str>,
    pub hours: Vec<&'a str>,
    pub weekdays: Vec<&'a str>,
    pub timezone: &'a str,
}

/// Which part is wrong, and why.
pub type Problem = (&'static str, String);

/// Compiles a window; the first problem names its key.
pub fn compile(written: &Written<'_>) -> Result<Active, Problem> {
    let tz = TimeZone::get(written.timezone).map_err(|_| {
        (
            "timezone",
            format!(
                "`{}` is not a time zone (an IANA name such as `Asia/Shanghai`)",
                written.timezone
            ),
        )
    })?;
    let from = written
        .from
        .map(|text| instant(text, &tz, false).map_err(|why| ("from", why)))
        .transpose()?;
    let until = written
        .until
        .map(|text| instant(text, &tz, true).map_err(|why| ("until", why)))
        .transpose()?;
    if let (Some(from), Some(until)) = (from, until) {
        if until <= from {
            return Err(("until", "`until` is not after `from`".to_owned()));
        }
    }
    let hours = written
        .hours
        .iter()
        .map(|text| range(text).map_err(|why| ("hours", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut weekdays = 0u8;
    for text in &written.weekdays {
        let day = weekday(text).ok_or_else(|| {
            (
                "weekdays",
                format!("`{text}` is not a day of the week (mon, tue, wed, thu, fri, sat, sun)"),
            )
        })?;
        weekdays |= 1 << day.to_monday_zero_offset();
    }
    Ok(Active {
        from,
        until,
        hours,
        weekdays,
        tz,
    })
}

/// A date or a date and time in `tz`, as unix seconds. For `from`, the first second it
/// names (a date: its midnight); for `until`, the second after the last it names (a date:
/// the next midnight; `2026-11-11T23:59:59`: 2026-11-12T00:00:00), so both ends are in.
fn instant(text: &str, tz: &TimeZone, until: bool) -> Result<i64, String> {
    let text = text.trim();
    // With an offset (`+08:00`, `Z`) the text names an instant, whatever the time zone.
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at.as_second() + i64::from(until));
    }
    // A time of day makes it a date and time (jiff's `Date` would read the date of one).
    let has_time = text.contains(['T', 't', ' ', ':']);
    let (civil, step): (DateTime, jiff::Span) = if !has_time {
        let date = text.parse::<Date>().map_err(|_| {
            format!("`{text}` is a date (`2026-11-11`) or a date and time (`2026-11-11T23:59:59`)")
        })?;
        (
            date.to_datetime(jiff::civil::Time::midnight()),
            jiff::Span::new().days(1),
        )
    } else {
        let civil = text.parse::<DateTime>().map_err(|_| {
            format!("`{text}` is a date (`2026-11-11`) or a date and time (`2026-11-11T23:59:59`)")
        })?;
        (civil, jiff::Span::new().seconds(1))
    };
    let civil = if until {
        civil.checked_add(step).map_err(|e| e.to_string())?
    } else {
        civil
    };
    tz.to_ambiguous_zoned(civil)
        .compatible()
        .map(|zoned| zoned.timestamp().as_second())
        .map_err(|e| e.to_string())
}

/// `HH:MM-HH:MM` as minutes of the day.
fn range(text: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("`{text}` is a range of times of day, `HH:MM-HH:MM` (`18:00-09:00` runs overnight)")
    };
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        // `24:00` ends a day.
        (h < 24 && m < 60 || (h == 24 && m == 0)).then_some(h * 60 + m)
    };
    let (start, end) = (
        minutes(start).ok_or_else(bad)?,
        minutes(end).ok_or_else(bad)?,
    );
    if start == end || start >= 24 * 60 {
        return Err(format!(
            "`{text}` is empty: its start and end are the same time"
        ));
    }
    Ok((start, end % (24 * 60)))
}

fn weekday(text: &str) -> Option<Weekday> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(
        from: Option<&str>,
        until: Option<&str>,
        hours: &[&str],
        weekdays: &[&str],
    ) -> Active {
        compile(&Written {
            from,
            until,
            hours: hours.to_vec(),
            weekdays: weekdays.to_vec(),
            timezone: DEFAULT_TIMEZONE,
        })
        .unwrap()
    }

    /// Unix seconds of a Shanghai wall-clock time.
    fn at(text: &str) -> u64 {
        let tz = TimeZone::get(DEFAULT_TIMEZONE).unwrap();
        let civil: DateTime = text.parse().unwrap();
        u64::try_from(tz.to_zoned(civil).unwrap().timestamp().as_second()).unwrap()
    }

    #[test]
    fn overnight_hours_on_weekdays() {
        let off_hours = window(
            None,
            None,
            &["18:00-09:00"],
            &["mon", "tue", "wed", "thu", "fri"],
        );
        // 2026-11-30 is a Monday.
        assert!(off_hours.holds(at("2026-11-30T20:00:00")));
        assert!(off_hours.holds(at("2026-11-30T08:59:59")));
        assert!(!off_hours.holds(at("2026-11-30T09:00:00")));
        assert!(!off_hours.holds(at("2026-11-30T17:59:00")));
        assert!(off_hours.holds(at("2026-11-30T18:00:00")));
        // Saturday: not a weekday of the window.
        assert!(!off_hours.holds(at("2026-12-05T20:00:00")));
        let lunch = window(None, None, &["12:00-13:30", "18:00-24:00"], &[]);
        assert!(lunch.holds(at("2026-12-05T13:29:00")));
        assert!(!lunch.holds(at("2026-12-05T13:30:00")));
        assert!(lunch.holds(at("2026-12-05T23:59:00")));
        assert!(!lunch.holds(at("2026-12-06T00:00:00")));
    }

    #[test]
    fn dates_are_whole_days_in_the_time_zone() {
        let campaign = window(Some("2026-11-01"), Some("2026-11-11"), &[], &[]);
        assert!(!campaign.holds(at("2026-10-31T23:59:59")));
        assert!(campaign.holds(at("2026-11-01T00:00:00")));
        assert!(campaign.holds(at("2026-11-11T23:59:59")));
        assert!(!campaign.holds(at("2026-11-12T00:00:00")));
        // Midnight in Shanghai is 16:00 UTC the day before.
        let utc_2026_10_31_1600 = u64::try_from(
            "2026-10-31T16:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second(),
        )
        .unwrap();
        assert!(campaign.holds(utc_2026_10_31_1600));
        assert!(!campaign.holds(utc_2026_10_31_1600 - 1));
        let to_the_second = window(
            Some("2026-11-11T10:00:00"),
            Some("2026-11-11T23:59:59"),
            &[],
            &[],
        );
        assert!(!to_the_second.holds(at("2026-11-11T09:59:59")));
        assert!(to_the_second.holds(at("2026-11-11T10:00:00")));
        assert!(to_the_second.holds(at("2026-11-11T23:59:59")));
        assert!(!to_the_second.holds(at("2026-11-12T00:00:00")));
    }

    #[test]
    fn a_time_with_an_offset_is_that_instant() {
        let utc = window(None, Some("2026-11-11T23:59:59+00:00"), &[], &[]);
        // 23:59:59 UTC is 07:59:59 the next day in Shanghai.
        assert!(utc.holds(at("2026-11-12T07:59:59")));
        assert!(!utc.holds(at("2026-11-12T08:00:00")));
    }

    #[test]
    fn each_mistake_names_its_key() {
        let problem = |w: Written<'_>| compile(&w).unwrap_err();
        let base = || Written {
            from: None,
            until: None,
            hours: vec![],
            weekdays: vec![],
            timezone: DEFAULT_TIMEZONE,
        };
        assert_eq!(
            problem(Written {
                timezone: "Mars/Olympus",
                ..base()
            })
            .0,
            "timezone"
        );
        assert_eq!(
            problem(Written {
                from: Some("11/01"),
                ..base()
            })
            .0,
            "from"
        );
        assert_eq!(
            problem(Written {
                from: Some("2026-11-11"),
                until: Some("2026-11-01"),
                ..base()
            }),
            ("until", "`until` is not after `from`".to_owned())
        );
        assert_eq!(
            problem(Written {
                hours: vec!["9-18"],
                ..base()
            })
            .0,
            "hours"
        );
        assert_eq!(
            problem(Written {
                hours: vec!["09:00-09:00"],
                ..base()
            })
            .0,
            "hours"
        );
        assert_eq!(
            problem(Written {
                weekdays: vec!["weekday"],
                ..base()
            })
            .0,
            "weekdays"
        );
    }
}

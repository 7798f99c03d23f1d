//! Intervals: how often a recurring task runs, and per-task timeouts.
//!
//! The grammar is deliberately strict: a whole number greater than zero, without sign or leading
//! zero, followed by exactly one unit: `s`, `m`, `h` or `d`. `30s`, `5m`, `1h`, `1d` and `90s` are
//! intervals; `PT1M`, `0m`, `-1m`, `1.5h`, `5x`, `""`, `1h30m`, `5 m` are not, and neither is a
//! number too large to add to a date. Every rejection is an [`Error::InvalidInterval`] that names
//! the input.
//!
//! ```
//! use es_task_store::Interval;
//!
//! let every_five_minutes: Interval = "5m".parse()?;
//! assert_eq!(every_five_minutes.as_secs(), 300);
//! assert_eq!(every_five_minutes.to_string(), "5m");
//! assert!("PT1M".parse::<Interval>().is_err());
//! # Ok::<(), es_task_store::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The largest interval accepted: 100 years. Anything longer is certainly a mistake and would
/// risk overflowing date arithmetic.
const MAX_SECS: u64 = 100 * 365 * 86_400;

/// The unit of an [`Interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalUnit {
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
}

impl IntervalUnit {
    fn from_char(c: char) -> Option<Self> {
        match c {
            's' => Some(Self::Seconds),
            'm' => Some(Self::Minutes),
            'h' => Some(Self::Hours),
            'd' => Some(Self::Days),
            _ => None,
        }
    }

    fn secs(self) -> u64 {
        match self {
            Self::Seconds => 1,
            Self::Minutes => 60,
            Self::Hours => 3_600,
            Self::Days => 86_400,
        }
    }

    fn symbol(self) -> char {
        match self {
            Self::Seconds => 's',
            Self::Minutes => 'm',
            Self::Hours => 'h',
            Self::Days => 'd',
        }
    }
}

/// A validated interval such as `5m`. Its string form is exactly what was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    amount: u64,
    unit: IntervalUnit,
}

impl Interval {
    /// Builds an interval from parts, with the same checks as parsing.
    ///
    /// ```
    /// use es_task_store::{Interval, IntervalUnit};
    /// assert_eq!(Interval::new(90, IntervalUnit::Seconds)?.to_string(), "90s");
    /// assert!(Interval::new(0, IntervalUnit::Minutes).is_err());
    /// # Ok::<(), es_task_store::Error>(())
    /// ```
    pub fn new(amount: u64, unit: IntervalUnit) -> Result<Self, Error> {
        let input = || format!("{amount}{}", unit.symbol());
        if amount == 0 {
            return Err(invalid(&input(), "must be greater than zero"));
        }
        match amount.checked_mul(unit.secs()) {
            Some(secs) if secs <= MAX_SECS => Ok(Self { amount, unit }),
            _ => Err(invalid(&input(), "too large (at most 100 years)")),
        }
    }

    /// Shorthand for `Interval::new(n, IntervalUnit::Seconds)`.
    pub fn seconds(n: u64) -> Result<Self, Error> {
        Self::new(n, IntervalUnit::Seconds)
    }

    /// Shorthand for `Interval::new(n, IntervalUnit::Minutes)`.
    pub fn minutes(n: u64) -> Result<Self, Error> {
        Self::new(n, IntervalUnit::Minutes)
    }

    /// The number before the unit.
    #[must_use]
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The unit.
    #[must_use]
    pub fn unit(&self) -> IntervalUnit {
        self.unit
    }

    /// Length in whole seconds.
    #[must_use]
    pub fn as_secs(&self) -> u64 {
        self.amount * self.unit.secs()
    }

    /// Length as a [`Duration`].
    #[must_use]
    pub fn as_duration(&self) -> Duration {
        Duration::from_secs(self.as_secs())
    }

    /// Length as a [`chrono::TimeDelta`], for date arithmetic.
    #[must_use]
    pub fn as_time_delta(&self) -> chrono::TimeDelta {
        // Bounded by MAX_SECS, so this always fits.
        chrono::TimeDelta::seconds(self.as_secs() as i64)
    }
}

fn invalid(input: &str, reason: &'static str) -> Error {
    Error::InvalidInterval {
        input: input.to_owned(),
        reason,
    }
}

impl FromStr for Interval {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let Some(last) = input.chars().last() else {
            return Err(invalid(input, "is empty"));
        };
        let Some(unit) = IntervalUnit::from_char(last) else {
            return Err(invalid(input, "must end with one unit: s, m, h or d"));
        };
        let digits = &input[..input.len() - last.len_utf8()];
        if digits.is_empty() {
            return Err(invalid(input, "must start with a whole number"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                input,
                "must be a whole number followed by one unit (no sign, fraction, space or second unit)",
            ));
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(invalid(input, "must not have a leading zero"));
        }
        let amount: u64 = digits
            .parse()
            .map_err(|_| invalid(input, "too large (at most 100 years)"))?;
        Self::new(amount, unit).map_err(|e| match e {
            Error::InvalidInterval { reason, .. } => invalid(input, reason),
            other => other,
        })
    }
}

impl TryFrom<&str> for Interval {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.symbol())
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_examples() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("1d", 86_400),
            ("90s", 90),
        ] {
            let interval: Interval = text.parse().unwrap();
            assert_eq!(interval.as_secs(), secs, "{text}");
            assert_eq!(interval.to_string(), text);
        }
    }

    #[test]
    fn rejects_everything_outside_the_grammar_naming_the_input() {
        for bad in [
            "PT1M",
            "0m",
            "-1m",
            "1.5h",
            "5x",
            "",
            "1h30m",
            "5 m",
            " 5m",
            "5m ",
            "+5m",
            "05m",
            "m",
            "5M",
            "99999999999999999999999s",
            "36501d",
            "5ms",
            "٣m",
        ] {
            match bad.parse::<Interval>() {
                Err(Error::InvalidInterval { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_message_names_the_input() {
        let err = "PT1M".parse::<Interval>().unwrap_err();
        assert!(err.to_string().contains("PT1M"), "{err}");
    }

    #[test]
    fn serde_round_trip_is_a_plain_string() {
        let interval: Interval = "1h".parse().unwrap();
        assert_eq!(serde_json::to_string(&interval).unwrap(), "\"1h\"");
        let back: Interval = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(back, interval);
        assert!(serde_json::from_str::<Interval>("\"0s\"").is_err());
    }
}

//! The version token of a stored task.
//!
//! Elasticsearch orders the writes to a document by `_seq_no` within a `_primary_term`; together
//! they identify one state of the document. Every conditional write sends both, and a write whose
//! version no longer matches fails with [`Error::Conflict`] instead of overwriting someone else's
//! change.
//!
//! The string form is the one Kibana uses: base64 of the JSON array `[seq_no,primary_term]`.
//!
//! ```
//! use es_task_store::Version;
//!
//! let version: Version = "WzEsMV0=".parse()?;
//! assert_eq!(version, Version::new(1, 1));
//! assert_eq!(version.to_string(), "WzEsMV0=");
//! # Ok::<(), es_task_store::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// `_seq_no` and `_primary_term` of one state of a stored task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// The document's `_seq_no`.
    pub seq_no: i64,
    /// The document's `_primary_term`.
    pub primary_term: i64,
}

impl Version {
    /// A version from its two parts.
    #[must_use]
    pub const fn new(seq_no: i64, primary_term: i64) -> Self {
        Self {
            seq_no,
            primary_term,
        }
    }

    /// Checks that this can be a stored version (`seq_no >= 0`, `primary_term >= 1`). Every
    /// conditional write checks it: the engine reads some out-of-range values as "no
    /// condition", which would turn a conditional write into an unconditional one.
    pub fn check(&self) -> Result<(), Error> {
        if self.seq_no >= 0 && self.primary_term >= 1 {
            Ok(())
        } else {
            Err(invalid(
                &format!("[{},{}]", self.seq_no, self.primary_term),
                "seq_no must be >= 0 and primary_term >= 1",
            ))
        }
    }

    /// Kibana's token: base64 of `[seq_no,primary_term]`.
    #[must_use]
    pub fn token(&self) -> String {
        STANDARD.encode(format!("[{},{}]", self.seq_no, self.primary_term))
    }
}

fn invalid(input: &str, reason: &'static str) -> Error {
    Error::InvalidVersion {
        input: input.to_owned(),
        reason,
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let bytes = STANDARD
            .decode(input)
            .map_err(|_| invalid(input, "not base64"))?;
        let parts: Vec<i64> = serde_json::from_slice(&bytes)
            .map_err(|_| invalid(input, "not a JSON array of two integers"))?;
        match parts.as_slice() {
            [seq_no, primary_term] if *seq_no >= 0 && *primary_term >= 1 => {
                Ok(Self::new(*seq_no, *primary_term))
            }
            [_, _] => Err(invalid(input, "seq_no must be >= 0 and primary_term >= 1")),
            _ => Err(invalid(input, "not a JSON array of two integers")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.token())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kibana_token_for_one_one() {
        assert_eq!(Version::new(1, 1).token(), "WzEsMV0=");
        assert_eq!("WzEsMV0=".parse::<Version>().unwrap(), Version::new(1, 1));
    }

    #[test]
    fn round_trips() {
        for v in [
            Version::new(0, 1),
            Version::new(42, 3),
            Version::new(i64::MAX, i64::MAX),
        ] {
            assert_eq!(v.token().parse::<Version>().unwrap(), v);
        }
    }

    #[test]
    fn rejects_garbage_naming_the_input() {
        let garbage = [
            "",
            "not base64!",
            "WzEsMV0",               // missing padding
            &STANDARD.encode("[1]"), // one element
            &STANDARD.encode("[1,2,3]"),
            &STANDARD.encode("{\"a\":1}"),
            &STANDARD.encode("[1.5,1]"),
            &STANDARD.encode("[-1,1]"),
            &STANDARD.encode("[1,0]"),
            &STANDARD.encode("hello"),
        ];
        for bad in garbage {
            match bad.parse::<Version>() {
                Err(Error::InvalidVersion { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be rejected, got {other:?}"),
            }
        }
    }
}

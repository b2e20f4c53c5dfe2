//! A profile's values, read the way the command line reads them, each error at its own line.
//!
//! [`Raw`] keeps the span of each element of an array: a bad element of a list spread over
//! several lines is named at its own line, not the key's.

use std::fmt::{self, Display};
use std::str::FromStr;

use clap::ValueEnum;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A bad value: what is wrong, and where (a byte offset in the file).
#[derive(Debug)]
pub(super) struct Bad {
    pub(super) at: usize,
    pub(super) message: String,
}

/// A value as written. Not `toml::Value`, which keeps no spans inside an array. A value itself
/// is not `Spanned`: toml 0.8 has no span for a dotted key's table (`dns.server = 1`) and fails
/// on one; and TOML puts a value on its key's line, whose span the key has.
#[derive(Debug, Clone)]
pub(super) enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Spanned<Raw>>),
    Datetime(String),
    Table,
}

impl Display for Raw {
    /// As it would be written, for "expected X, found Y".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Str(s) => write!(f, "{s:?}"),
            Raw::Int(n) => write!(f, "{n}"),
            Raw::Float(x) => write!(f, "{x}"),
            Raw::Bool(b) => write!(f, "{b}"),
            Raw::Datetime(d) => write!(f, "{d}"),
            Raw::Array(_) | Raw::Table => Ok(()),
        }
    }
}

impl Raw {
    /// TOML's name for the type, for "expected X, found Y".
    fn type_str(&self) -> &'static str {
        match self {
            Raw::Str(_) => "string",
            Raw::Int(_) => "integer",
            Raw::Float(_) => "float",
            Raw::Bool(_) => "boolean",
            Raw::Array(_) => "array",
            Raw::Datetime(_) => "datetime",
            Raw::Table => "table",
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

/// How toml hands a datetime to a visitor: a map of one entry under this key (the constant is
/// `toml_datetime::__unstable::FIELD`, not public API; if it ever changes, a datetime is only
/// called a table in a message).
const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut elements = Vec::new();
        while let Some(el) = seq.next_element()? {
            elements.push(el);
        }
        Ok(Raw::Array(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let first: Option<String> = map.next_key()?;
        let raw = match first.as_deref() {
            Some(DATETIME_KEY) => Raw::Datetime(map.next_value()?),
            Some(_) => {
                map.next_value::<de::IgnoredAny>()?;
                Raw::Table
            }
            None => Raw::Table,
        };
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        Ok(raw)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v).map(Raw::Int).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.into()))
    }
}

/// A value of the profile with where it stands in the file: its key's offset, or for an
/// element of an array its own.
pub(super) struct Setting<'a> {
    at: usize,
    value: &'a Raw,
}

impl<'a> Setting<'a> {
    /// The value of the key at byte offset `at`.
    pub(super) fn new(at: usize, value: &'a Raw) -> Setting<'a> {
        Setting { at, value }
    }

    pub(super) fn bad(&self, message: impl Into<String>) -> Bad {
        Bad { at: self.at, message: message.into() }
    }

    /// "expected X, found Y".
    fn expected(&self, what: &str) -> Bad {
        self.bad(format!("expected {what}, found {} {}", self.value.type_str(), self.value).trim_end().to_string())
    }

    pub(super) fn str(&self) -> Result<&'a str, Bad> {
        match self.value {
            Raw::Str(s) => Ok(s),
            _ => Err(self.expected("a string")),
        }
    }

    pub(super) fn bool(&self) -> Result<bool, Bad> {
        match self.value {
            Raw::Bool(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    /// An integer in `lo..=hi`, the same range as the option's on the command line.
    pub(super) fn int_in<T: TryFrom<i64> + Into<i64>>(&self, lo: T, hi: T) -> Result<T, Bad> {
        let Raw::Int(n) = *self.value else {
            return Err(self.expected("an integer"));
        };
        let (lo, hi) = (lo.into(), hi.into());
        let out_of_range = || self.bad(format!("{n} is not in {lo}..={hi}"));
        if !(lo..=hi).contains(&n) {
            return Err(out_of_range());
        }
        T::try_from(n).map_err(|_| out_of_range())
    }

    /// With the option's own parser: an error names what the option accepts.
    pub(super) fn parse<T: FromStr<Err: Display>>(&self) -> Result<T, Bad> {
        self.str()?.parse().map_err(|e: T::Err| self.bad(e.to_string()))
    }

    /// One of the option's clap values (`on`/`off`, `default`/`fast`).
    pub(super) fn choice<T: ValueEnum>(&self) -> Result<T, Bad> {
        let s = self.str()?;
        T::from_str(s, false).map_err(|_| {
            let names: Vec<String> =
                T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|p| p.get_name().into()).collect();
            self.bad(format!("{s:?} is not one of: {}", names.join(", ")))
        })
    }

    /// A repeatable option: an array of strings (or one string), each parsed, each error at
    /// its own line.
    pub(super) fn list<T: FromStr<Err: Display>>(&self) -> Result<Vec<T>, Bad> {
        match self.value {
            Raw::Str(_) => Ok(vec![self.parse()?]),
            Raw::Array(elements) => {
                elements.iter().map(|el| Setting::new(el.span().start, el.get_ref()).parse()).collect()
            }
            _ => Err(self.expected("an array of strings")),
        }
    }
}

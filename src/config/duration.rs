//! Humane durations in the config file: `250ms`, `30s`, `5m`, `24h`.
//!
//! A bare number is refused (is `30` seconds or milliseconds?) except `0`, which some fields
//! use to mean "never" or "off".

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A duration written the way people write them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `secs` seconds, for defaults.
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl<'de> de::Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HumanDurationVisitor)
    }
}

struct HumanDurationVisitor;

impl Visitor<'_> for HumanDurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration with a unit, like 250ms, 30s, 5m or 24h")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
        if v == 0 {
            Ok(HumanDuration(Duration::ZERO))
        } else {
            Err(E::custom(format!(
                "duration `{v}` has no unit: write it as {v}s or {v}ms"
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("a duration cannot be negative")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
        Err(E::custom(format!(
            "duration `{v}` has no unit: write it like 1500ms or 2s"
        )))
    }
}

/// Parses `250ms`, `30s`, `1h30m`; refuses anything without a unit.
pub fn parse(text: &str) -> Result<HumanDuration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(HumanDuration(Duration::ZERO));
    }
    humantime::parse_duration(text)
        .map(HumanDuration)
        .map_err(|e| {
            format!("invalid duration `{text}` ({e}): write it like 250ms, 30s, 5m or 24h")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_understood() {
        assert_eq!(parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(parse("30s").unwrap().0, Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(parse("24h").unwrap().0, Duration::from_secs(86_400));
        assert_eq!(parse("1h 30m").unwrap().0, Duration::from_secs(5_400));
        assert_eq!(parse("0").unwrap().0, Duration::ZERO);
    }

    #[test]
    fn numbers_without_units_are_refused() {
        assert!(parse("30").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// A duration written in any of the units people use parses back to itself, alone or
        /// as a sum of parts (`1h 30m`), surrounded by blanks or not.
        #[test]
        fn written_durations_parse_back(
            parts in prop::collection::vec((0u64..100_000, prop::sample::select(vec![
                ("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
            ])), 1..4),
            blank in prop::sample::select(vec!["", " ", "  "]),
        ) {
            let text: Vec<String> = parts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect();
            let text = format!("{blank}{}{blank}", text.join(" "));
            let millis: u64 = parts.iter().map(|(n, (_, per))| n * per).sum();
            prop_assert_eq!(parse(&text).map(|d| d.0), Ok(Duration::from_millis(millis)));
        }

        #[test]
        fn humantime_formatting_round_trips(secs in 0u64..10_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let text = humantime::format_duration(d).to_string();
            prop_assert_eq!(parse(&text).map(|d| d.0), Ok(d));
        }

        #[test]
        fn bare_numbers_other_than_zero_are_refused(n in 1u64..) {
            prop_assert!(parse(&n.to_string()).is_err());
        }

        /// Garbage is an error, never a panic, through the string parser and through YAML.
        #[test]
        fn garbage_never_panics(text in "\\PC{0,40}", digits in "[0-9]{15,40}[a-z]{0,3}") {
            let _ = parse(&text);
            let _ = parse(&digits);
            #[derive(serde::Deserialize)]
            #[allow(dead_code)]
            struct T {
                d: HumanDuration,
            }
            let _ = serde_saphyr::from_str::<T>(&format!("d: {digits}"));
            let _ = serde_saphyr::from_str::<T>(&format!("d: {text:?}"));
        }
    }

    #[test]
    fn yaml_numbers_need_a_unit_except_zero() {
        #[derive(serde::Deserialize)]
        struct T {
            d: HumanDuration,
        }
        let t: T = serde_saphyr::from_str("d: 0").unwrap();
        assert_eq!(t.d.0, Duration::ZERO);
        let err = serde_saphyr::from_str::<T>("d: 30").err().unwrap();
        assert!(err.to_string().contains("30s"), "{err}");
        let t: T = serde_saphyr::from_str("d: 2s").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(2));
    }
}

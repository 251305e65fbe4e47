//! A token's claims set, read no further than a request needs.
//!
//! Verifying a token takes a handful of its claims (`iss`, `exp`, `nbf`, `iat`, `aud`, `jti`,
//! `sub`, the scopes), and must refuse a claims set that is not strict JSON (a duplicate member
//! at any depth, nesting too deep; see `json`). [`Members`] does both in one pass without
//! building the set: each top-level member is kept as its name and its JSON text, borrowed
//! from the decoded payload, and only the values a plain scan cannot vouch for (numbers,
//! escaped strings, objects, arrays) are parsed again, strictly, to check them. The whole set
//! is parsed into a map only when something asks for a claim by path (claim rules,
//! `claims_to_headers`, a dotted `scopes_claim`), once, and a cached token keeps that map
//! ([`Claims::map`]). A route that reads claims by path has its new tokens' claims parsed
//! into the map at once instead ([`Claims::parsed`]), so that they are not read twice.
//!
//! A new token on a route that only verifies it then costs two allocations for its claims
//! (their text and the list of members) where a parse into a map costs one for every name,
//! string, array and node of the map besides: 14 for a typical access token. `jti` and `sub`,
//! which revocation reads on every request, are kept as spans of the text ([`Text`]) rather
//! than as copies.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserializer as _;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::json::{NameSeed, check_strict_nested, has_repeated_name, parse_strict_object};

/// A verified token's claims: the JSON text as the token carried it, found strict by
/// [`Members::parse`], and the map parsed from it on first use.
#[derive(Debug)]
pub struct Claims {
    json: String,
    map: OnceLock<Map<String, Value>>,
}

impl Claims {
    /// Claims whose text `json` is still to be checked with [`Members::parse`]: nothing reads
    /// [`Claims::map`] before that has succeeded.
    pub(super) fn new(json: String) -> Self {
        Self {
            json,
            map: OnceLock::new(),
        }
    }

    /// Claims whose text `json` is parsed into their map at once, strictly (see `json`);
    /// `None` when it is not a strict JSON object.
    pub(super) fn parsed(json: String) -> Option<Self> {
        let map = parse_strict_object(json.as_bytes())?;
        Some(Self {
            json,
            map: OnceLock::from(map),
        })
    }

    /// Claims given as a map (tests and tools).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self {
            json: Value::Object(map.clone()).to_string(),
            map: OnceLock::from(map),
        }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The map, if it has been parsed already.
    pub(super) fn parsed_map(&self) -> Option<&Map<String, Value>> {
        self.map.get()
    }

    /// Every claim, parsed the first time it is asked for.
    pub fn map(&self) -> &Map<String, Value> {
        // Members::parse accepts exactly the objects parse_strict does, and verify reads no map
        // of claims it refused: were the text refused here, there would be nothing to recover
        // but an empty set.
        self.map
            .get_or_init(|| parse_strict_object(self.json.as_bytes()).unwrap_or_default())
    }
}

/// A piece of a token's claims kept after verifying it (`jti`, `sub`): where it stands in the
/// claims' JSON text when it is there as it reads (no escapes), otherwise a copy of its own.
/// A span costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Claims {
    /// Keeps `text`: as a span when it is a slice of these claims' JSON text, as a copy
    /// otherwise.
    pub fn keep(&self, text: Cow<'_, str>) -> Text {
        if let Cow::Borrowed(slice) = &text {
            let start = (slice.as_ptr() as usize).wrapping_sub(self.json.as_ptr() as usize);
            let end = start.wrapping_add(slice.len());
            if start <= end
                && end <= self.json.len()
                && let (Ok(start32), Ok(end32)) = (u32::try_from(start), u32::try_from(end))
                && self
                    .json
                    .get(start..end)
                    .is_some_and(|s| s.as_ptr() == slice.as_ptr())
            {
                return Text::Span(start32, end32);
            }
        }
        Text::Owned(text.into())
    }

    /// What `text`, kept by [`Claims::keep`] from these claims, says.
    pub fn read<'a>(&'a self, text: &'a Text) -> &'a str {
        match text {
            Text::Span(start, end) => self.json.get(*start as usize..*end as usize).unwrap_or(""),
            Text::Owned(text) => text,
        }
    }
}

/// The top-level members of a claims set, each name with its value's JSON text, borrowed.
pub(crate) struct Members<'a> {
    list: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Members<'a> {
    /// Reads the object `json`, refusing what `json::parse_strict` refuses: anything that is
    /// not one JSON object, with no duplicate member at any depth and no nesting deeper than
    /// its limit.
    pub(crate) fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let members = deserializer.deserialize_map(TopLevel)?;
        deserializer.end()?;
        Ok(members)
    }

    /// The JSON text of the member `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.list
            .iter()
            .find(|(member, _)| member == name)
            .map(|&(_, value)| value)
    }

    /// The member `name` if it is a string.
    pub(crate) fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).and_then(text)
    }

    /// The member `name` if it is a number; `Err` when it is there but something else.
    pub(crate) fn number(&self, name: &str) -> Result<Option<f64>, ()> {
        match self.get(name) {
            None => Ok(None),
            // `parse` checked the member as strict JSON, so what starts like a number is one,
            // in range, and in a syntax Rust's own reading of an `f64` takes as it stands.
            Some(value) => match value.get() {
                number if number.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                    number.parse().map(Some).map_err(drop)
                }
                _ => Err(()),
            },
        }
    }
}

/// `value` as a string, if it is one: borrowed unless it has escapes.
pub fn text(value: &RawValue) -> Option<Cow<'_, str>> {
    let json = value.get();
    let quoted = json.strip_prefix('"')?;
    // A raw value is valid JSON: a string without escapes is what stands between its quotes.
    if !quoted.contains('\\') {
        return quoted.strip_suffix('"').map(Cow::Borrowed);
    }
    serde_json::from_str::<String>(json).ok().map(Cow::Owned)
}

/// Whether a scan that skipped `value` vouches for it as strict JSON: a string without
/// escapes, `true`, `false` or `null`. Escapes can spell lone surrogates, numbers can be out
/// of range, and objects and arrays can repeat members or nest too deeply: those are parsed.
fn needs_check(value: &RawValue) -> bool {
    let json = value.get();
    match json.as_bytes().first() {
        Some(b'"') => json.contains('\\'),
        Some(b't' | b'f' | b'n') => false,
        _ => true,
    }
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut list = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value: &'de RawValue = map.next_value()?;
            if needs_check(value) {
                check_strict_nested(value.get()).map_err(de::Error::custom)?;
            }
            list.push((name, value));
        }
        if has_repeated_name(&list, |(name, _)| name) {
            return Err(de::Error::custom("duplicate member"));
        }
        Ok(Members { list })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents `parse_strict` refuses or accepts, each for a reason of its own.
    const DOCUMENTS: &[&str] = &[
        r#"{"iss":"i","exp":1700000000,"aud":["a","b"],"scope":"x y"}"#,
        r#"{}"#,
        r#" { "a" : 1 , "b" : [ ] } "#,
        r#"{"a":"x","a":"y"}"#,
        r#"{"a":"x","\u0061":"y"}"#,
        r#"{"a":{"k":1,"k":2}}"#,
        r#"{"a":[{"k":1},{"k":1,"k":2}]}"#,
        r#"{"a":{"k":{"k":1}}}"#,
        r#"{"a":1e400}"#,
        r#"{"a":-1e400}"#,
        r#"{"a":18446744073709551616}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\q"}"#,
        r#"{"a":"tab	inside"}"#,
        r#"{"\ud800":1}"#,
        r#"{"a":1} x"#,
        r#"{"a":1,}"#,
        r#"[]"#,
        r#""text""#,
        r#"1"#,
        r#"null"#,
        r#"{"a":tru}"#,
        r#"{"a":null,"b":true,"c":false,"d":-0.5}"#,
        "",
    ];

    fn agree(json: &str) {
        let strict = parse_strict_object(json.as_bytes()).is_some();
        assert_eq!(Members::parse(json).is_ok(), strict, "{json}");
    }

    #[test]
    fn members_accept_exactly_the_objects_strict_json_accepts() {
        for json in DOCUMENTS {
            agree(json);
        }
    }

    #[test]
    fn nesting_is_limited_as_strict_json_limits_it() {
        for depth in 28..36 {
            agree(&format!(
                "{}1{}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            ));
            agree(&format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ));
        }
    }

    #[test]
    fn many_members_are_searched_for_duplicates_too() {
        let names: Vec<String> = (0..200).map(|i| format!("\"m{i}\":{i}")).collect();
        agree(&format!("{{{}}}", names.join(",")));
        agree(&format!("{{{},\"m117\":0}}", names.join(",")));
        agree(&format!("{{\"m0\":{{}},{}}}", names.join(",")));
    }

    #[test]
    fn members_read_as_the_map_reads_them() {
        let json = r#"{"iss":"https://i","sub":"a\"b","exp":1.7e9,"nbf":"soon","n":null}"#;
        let members = Members::parse(json).unwrap();
        let claims = Claims::new(json.to_owned());
        let map = claims.map();
        assert_eq!(members.text("iss").as_deref(), map["iss"].as_str());
        assert!(matches!(members.text("iss"), Some(Cow::Borrowed(_))));
        assert_eq!(members.text("sub").as_deref(), Some("a\"b"));
        assert_eq!(members.number("exp"), Ok(map["exp"].as_f64()));
        assert_eq!(members.number("nbf"), Err(()));
        let numbers = r#"{"a":-0.5,"b":1e3,"c":18446744073709551615,"d":0,"e":-12E-2,"f":1.7976931348623157e308}"#;
        let numeric = Members::parse(numbers).unwrap();
        let parsed = Claims::new(numbers.to_owned());
        for name in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(
                numeric.number(name),
                Ok(parsed.map()[name].as_f64()),
                "{name}"
            );
        }
        assert_eq!(numeric.text("a"), None);
        assert_eq!(members.number("n"), Err(()));
        assert_eq!(members.number("iat"), Ok(None));
        assert_eq!(members.text("exp"), None);
        assert_eq!(members.text("missing"), None);
    }

    #[test]
    fn text_from_the_claims_is_kept_as_a_span_and_any_other_as_a_copy() {
        let json = r#"{"sub":"alice","jti":"a\u0062c"}"#;
        let claims = Claims::new(json.to_owned());
        let members = Members::parse(claims.json()).unwrap();
        let sub = claims.keep(members.text("sub").unwrap());
        let jti = claims.keep(members.text("jti").unwrap());
        assert!(matches!(sub, Text::Span(..)), "{sub:?}");
        assert_eq!(claims.read(&sub), "alice");
        assert_eq!(jti, Text::Owned("abc".into()));
        assert_eq!(claims.read(&jti), "abc");
        // The same characters, borrowed from somewhere else: a copy, never a span.
        let elsewhere = String::from("alice");
        let copy = claims.keep(Cow::Borrowed(&elsewhere));
        assert_eq!(copy, Text::Owned("alice".into()));
        let empty = claims.keep(Cow::Borrowed(&claims.json()[json.len()..]));
        assert_eq!(claims.read(&empty), "");
    }

    #[test]
    fn claims_from_a_map_read_back_the_same() {
        let map = serde_json::json!({"a": [1, "x"], "b": {"c": true}});
        let claims = Claims::from_map(map.as_object().unwrap().clone());
        assert_eq!(Value::Object(claims.map().clone()), map);
        let reread = Claims::new(claims.json().to_owned());
        assert_eq!(Value::Object(reread.map().clone()), map);
    }
}

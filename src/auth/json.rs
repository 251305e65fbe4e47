//! JSON for JOSE headers and claims sets, refusing duplicate member names at any depth.
//!
//! RFC 7515 §5.2 lets a parser either refuse duplicates or take the last one; taking one
//! silently is how two components come to disagree about a token's claims, so we refuse.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Nesting deeper than this is refused: no legitimate token needs it.
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as JSON, refusing duplicate object keys and absurd nesting.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue { depth: 0 }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// `bytes` parsed as by [`parse_strict`], if they are a JSON object: a JOSE header or a claims
/// set.
pub fn parse_strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match parse_strict(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Objects with this many members or fewer are searched for a repeated name one by one; larger
/// ones are sorted, so that an object of many members cannot make the search quadratic.
const LINEAR_SEARCH: usize = 16;

/// Whether two of `members` have the same name, `name` telling each one's.
pub(crate) fn has_repeated_name<T>(members: &[T], name: impl Fn(&T) -> &str) -> bool {
    if members.len() <= LINEAR_SEARCH {
        return members
            .iter()
            .enumerate()
            .any(|(i, member)| members[..i].iter().any(|seen| name(seen) == name(member)));
    }
    let mut sorted: Vec<&str> = members.iter().map(name).collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

/// Checks `json`, a value nested one level inside a claims set or header, the way
/// `parse_strict` checks the values it nests, without building it.
pub fn check_strict_nested(json: &str) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    StrictCheck { depth: 1 }.deserialize(&mut deserializer)?;
    deserializer.end()
}

#[derive(Clone, Copy)]
struct StrictValue {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(inner)?);
                }
                Entry::Occupied(taken) => {
                    let key = taken.key();
                    return Err(de::Error::custom(format_args!("duplicate member `{key}`")));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

impl StrictValue {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        deeper(self.depth).map(|depth| Self { depth })
    }
}

/// The depth one level below `depth`, or the error for nesting past the limit.
fn deeper<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom("JSON nested too deeply"));
    }
    Ok(depth + 1)
}

/// `StrictValue`'s checks, building nothing: an object's names are kept only while it is
/// read, borrowed where they have no escapes, and searched for a repeat at its end.
#[derive(Clone, Copy)]
struct StrictCheck {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictCheck {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut names: Vec<Cow<'de, str>> = Vec::new();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            map.next_value_seed(inner)?;
            names.push(name);
        }
        if has_repeated_name(&names, |name| name) {
            return Err(de::Error::custom("duplicate member"));
        }
        Ok(())
    }
}

impl StrictCheck {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        deeper(self.depth).map(|depth| Self { depth })
    }
}

/// An object member's name, borrowed unless it has escapes.
pub(crate) struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_json_parses_like_serde_json() {
        let text = br#"{"a":1,"b":[true,null,"x",{"c":2.5}],"d":{"e":-3}}"#;
        assert_eq!(
            parse_strict(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        assert!(parse_strict(br#"{"sub":"a","sub":"b"}"#).is_err());
        assert!(parse_strict(br#"{"x":{"k":1,"k":2}}"#).is_err());
        assert!(parse_strict(br#"[{"k":1,"k":2}]"#).is_err());
        // The same name at different places is fine.
        assert!(parse_strict(br#"{"k":{"k":1}}"#).is_ok());
    }

    #[test]
    fn trailing_garbage_and_deep_nesting_are_refused() {
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_strict(deep.as_bytes()).is_err());
    }
}

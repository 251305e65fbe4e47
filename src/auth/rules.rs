//! A route's rules on a verified token: `scopes.all_of`, `scopes.any_of`, and exact `claims`.

use std::fmt;

use serde_json::{Map, Value};

use super::verify::Verified;
use crate::config::{AuthRules, ClaimValue};

/// Why a verified token does not meet a route's rules: the scopes to name in the 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub scope: String,
}

/// Checks `token` against `rules`.
pub fn check(rules: &AuthRules, token: &Verified) -> Result<(), Unmet> {
    let has = |scope: &String| token.scopes().any(|s| s == scope);
    let missing: Vec<&str> = rules
        .all_of
        .iter()
        .filter(|s| !has(s))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Unmet {
            scope: missing.join(" "),
        });
    }
    if !rules.any_of.is_empty() && !rules.any_of.iter().any(has) {
        return Err(Unmet {
            scope: rules.any_of.join(" "),
        });
    }
    let claims_met = rules.claims.iter().all(|(path, wanted)| {
        path.find(token.claims.map())
            .is_some_and(|v| matches(v, wanted))
    });
    if !claims_met {
        // RFC 6750 §3: name what the route needs; a claim's value is never echoed.
        return Err(Unmet {
            scope: rules.all_of.join(" "),
        });
    }
    Ok(())
}

/// A claim the config names: found by its exact name first, so that names containing dots
/// (`https://example.com/roles`) work, else, for a dotted name, by walking the path
/// (`realm_access.roles`). Split once when the config is loaded: splitting on every request
/// costs 50-70 ns more on a route with two dotted claims
/// (`cargo bench --bench verify -- warm_cache_hit_with_dotted_claim_rules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    name: String,
    /// The name split on dots; one segment when it has none.
    segments: Box<[String]>,
}

impl ClaimPath {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            segments: name.split('.').map(str::to_owned).collect(),
        }
    }

    /// The claim's whole name, dots and all.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether every dot-separated segment has a name (`a..b` and `.a` have not).
    pub fn is_well_formed(&self) -> bool {
        self.segments.iter().all(|s| !s.is_empty())
    }

    /// The claim's value in `claims`, if it has one.
    pub fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(&self.name) {
            return Some(value);
        }
        let [first, rest @ ..] = &self.segments[..] else {
            return None;
        };
        if rest.is_empty() {
            return None;
        }
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Equal, or, for an array claim, holding the wanted value.
fn matches(value: &Value, wanted: &ClaimValue) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| scalar_matches(item, wanted)),
        scalar => scalar_matches(scalar, wanted),
    }
}

fn scalar_matches(value: &Value, wanted: &ClaimValue) -> bool {
    match (value, wanted) {
        (Value::String(s), ClaimValue::String(w)) => s == w,
        (Value::Bool(b), ClaimValue::Bool(w)) => b == w,
        (Value::Number(n), ClaimValue::Integer(w)) => n.as_i64() == Some(*w),
        _ => false,
    }
}

/// A claim as a header value: strings as they are, arrays joined with spaces, objects as JSON.
pub fn header_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: Value, scopes: &[&str]) -> Verified {
        Verified::from_map(claims.as_object().unwrap().clone(), scopes, 0.0)
    }

    fn rules(all_of: &[&str], any_of: &[&str], claims: &[(&str, ClaimValue)]) -> AuthRules {
        AuthRules {
            issuers: None,
            all_of: all_of.iter().map(|s| s.to_string()).collect(),
            any_of: any_of.iter().map(|s| s.to_string()).collect(),
            claims: claims
                .iter()
                .map(|(k, v)| (ClaimPath::new(k), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn all_of_names_the_missing_scopes() {
        let t = token(serde_json::json!({}), &["a", "c"]);
        assert!(check(&rules(&["a", "c"], &[], &[]), &t).is_ok());
        assert_eq!(
            check(&rules(&["a", "b", "d"], &[], &[]), &t)
                .unwrap_err()
                .scope,
            "b d"
        );
    }

    #[test]
    fn any_of_needs_one() {
        let t = token(serde_json::json!({}), &["x"]);
        assert!(check(&rules(&[], &["w", "x"], &[]), &t).is_ok());
        assert_eq!(
            check(&rules(&[], &["w", "z"], &[]), &t).unwrap_err().scope,
            "w z"
        );
    }

    #[test]
    fn claims_match_strings_numbers_bools_and_array_members() {
        let t = token(
            serde_json::json!({"tenant": "acme", "level": 3, "admin": true, "groups": ["a", "b"],
                               "org": {"id": "o1"}, "https://x.example/role": "r"}),
            &[],
        );
        let ok = |name: &str, v: ClaimValue| check(&rules(&[], &[], &[(name, v)]), &t).is_ok();
        assert!(ok("tenant", ClaimValue::String("acme".into())));
        assert!(!ok("tenant", ClaimValue::String("evil".into())));
        assert!(ok("level", ClaimValue::Integer(3)));
        assert!(!ok("level", ClaimValue::String("3".into())));
        assert!(ok("admin", ClaimValue::Bool(true)));
        assert!(ok("groups", ClaimValue::String("b".into())));
        assert!(!ok("groups", ClaimValue::String("c".into())));
        assert!(ok("org.id", ClaimValue::String("o1".into())));
        assert!(ok("https://x.example/role", ClaimValue::String("r".into())));
        assert!(!ok("missing", ClaimValue::Bool(true)));
    }

    #[test]
    fn claim_paths_try_the_exact_name_before_walking_the_dots() {
        let claims = serde_json::json!({
            "a.b": "exact", "a": {"b": "walked", "c": 1}, "s": "text", "x": {"y": {"z": true}}
        });
        let claims = claims.as_object().unwrap();
        let find = |name: &str| ClaimPath::new(name).find(claims).cloned();
        assert_eq!(find("a.b"), Some(serde_json::json!("exact")));
        assert_eq!(find("a.c"), Some(serde_json::json!(1)));
        assert_eq!(find("x.y.z"), Some(serde_json::json!(true)));
        assert_eq!(find("s.t"), None, "a string has no members");
        assert_eq!(find("a.missing"), None);
        assert_eq!(find("b"), None);
        assert!(ClaimPath::new("realm_access.roles").is_well_formed());
        for bad in ["", ".a", "a.", "a..b"] {
            assert!(!ClaimPath::new(bad).is_well_formed(), "{bad:?}");
        }
    }

    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn scope_set() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(str::to_owned),
            0..5,
        )
    }

    proptest! {
        /// Scopes against a model in sets: all of `all_of` held, and one of `any_of` when
        /// it is not empty; a refusal names exactly the missing `all_of` scopes, in order,
        /// or, when none is missing, all of `any_of`.
        #[test]
        fn scope_rules_agree_with_a_set_model(
            held in scope_set(),
            all_of in scope_set(),
            any_of in scope_set(),
        ) {
            let t = token(serde_json::json!({}), &held.iter().map(String::as_str).collect::<Vec<_>>());
            let r = AuthRules { all_of: all_of.clone(), any_of: any_of.clone(), ..AuthRules::default() };
            let held: BTreeSet<&String> = held.iter().collect();
            let missing: Vec<&str> = all_of.iter().filter(|s| !held.contains(s)).map(String::as_str).collect();
            let any_ok = any_of.is_empty() || any_of.iter().any(|s| held.contains(s));
            match check(&r, &t) {
                Ok(()) => prop_assert!(missing.is_empty() && any_ok),
                Err(unmet) if !missing.is_empty() => prop_assert_eq!(unmet.scope, missing.join(" ")),
                Err(unmet) => {
                    prop_assert!(!any_ok);
                    prop_assert_eq!(unmet.scope, any_of.join(" "));
                }
            }
        }

        /// Claim rules: a string claim matches when equal, an array claim when it holds the
        /// value; a claim of another type, or absent, never matches.
        #[test]
        fn claim_rules_agree_with_equality_or_membership(
            value in prop::sample::select(vec!["x", "y", "z"]),
            wanted in prop::sample::select(vec!["x", "y"]),
            as_array in prop::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 0..3),
            shape in 0u8..4,
        ) {
            let claim = match shape {
                0 => serde_json::json!(value),
                1 => serde_json::json!(as_array),
                2 => serde_json::json!({"nested": value}),
                _ => serde_json::json!(null),
            };
            let expected = match shape {
                0 => value == wanted,
                1 => as_array.contains(&wanted),
                _ => false,
            };
            let t = token(serde_json::json!({"c": claim}), &[]);
            let r = rules(&[], &[], &[("c", ClaimValue::String(wanted.to_owned()))]);
            prop_assert_eq!(check(&r, &t).is_ok(), expected);
        }
    }

    #[test]
    fn header_text_joins_arrays_and_serialises_objects() {
        assert_eq!(header_text(&serde_json::json!("u1")), "u1");
        assert_eq!(header_text(&serde_json::json!(["a", "b", 3])), "a b 3");
        assert_eq!(header_text(&serde_json::json!({"k": 1})), "{\"k\":1}");
        assert_eq!(header_text(&serde_json::json!(42)), "42");
    }
}

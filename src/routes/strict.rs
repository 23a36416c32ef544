//! Request bodies read exactly as the API description states them (API.md §18.5), where
//! serde's derive reads otherwise:
//! - whole numbers as JSON Schema reads them: `1.0` is the integer 1, as `1` is (serde
//!   refuses it for an integer field); `1.5` and negative numbers are refused;
//! - objects only where the description says object (serde's derive also takes an array
//!   of the fields' values for a struct: `"policy": [6, 600]`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        // The field's own range, narrower than its type's, is checked after and said then.
        T::try_from(v).map_err(|_| E::custom("is too large for this field"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("must be a whole number, not negative")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Below 2^53 every whole f64 is exact.
        if v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.visit_u64(v as u64)
        } else if v < 0.0 {
            Err(E::custom("must be a whole number, not negative"))
        } else if v.fract() == 0.0 {
            Err(E::custom("is too large for this field"))
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

struct MaybeWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for MaybeWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number, or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        whole(d).map(Some)
    }
}

/// `#[serde(deserialize_with = "whole")]`
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(PhantomData))
}

/// `#[serde(default, deserialize_with = "maybe_whole")]` for an optional one.
pub fn maybe_whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(MaybeWhole(PhantomData))
}

struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// `#[serde(deserialize_with = "object")]`: a struct from a JSON object only.
pub fn object<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(ObjectOnly(PhantomData))
}

struct MaybeObject<T>(PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for MaybeObject<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object, or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        object(d).map(Some)
    }
}

/// `#[serde(default, deserialize_with = "maybe_object")]` for an optional one.
pub fn maybe_object<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(MaybeObject(PhantomData))
}

/// `#[serde(default, deserialize_with = "present_object")]`: absent (`None`), `null`
/// (`Some(None)`) or an object.
pub fn present_object<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    maybe_object(d).map(Some)
}

/// `#[serde(default, deserialize_with = "present")]`: absent (`None`), `null`
/// (`Some(None)`) or a value.
pub fn present<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// One object in a list.
struct Item<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d).map(Item)
    }
}

/// `#[serde(deserialize_with = "objects")]`: a list of objects.
pub fn objects<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let items: Vec<Item<T>> = serde::Deserialize::deserialize(d)?;
    Ok(items.into_iter().map(|i| i.0).collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct B {
        #[serde(deserialize_with = "super::whole")]
        port: u16,
        #[serde(default, deserialize_with = "super::maybe_whole")]
        grace: Option<u64>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Inner {
        a: Option<u32>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Outer {
        #[serde(default, deserialize_with = "super::maybe_object")]
        one: Option<Inner>,
        #[serde(default, deserialize_with = "super::objects")]
        many: Vec<Inner>,
    }

    #[test]
    fn structs_come_from_objects_only() {
        let ok: Outer = serde_json::from_str(r#"{"one": {"a": 1}, "many": [{"a": 2}]}"#).unwrap();
        assert_eq!(ok.one, Some(Inner { a: Some(1) }));
        assert_eq!(ok.many, vec![Inner { a: Some(2) }]);
        let none: Outer = serde_json::from_str(r#"{"one": null}"#).unwrap();
        assert_eq!(none.one, None);
        for bad in [
            r#"{"one": [1]}"#,
            r#"{"one": [null, null]}"#,
            r#"{"many": [[2]]}"#,
            r#"{"one": {"a": 1, "a": 2}}"#,
        ] {
            assert!(serde_json::from_str::<Outer>(bad).is_err(), "{bad}");
        }
    }

    fn parse(s: &str) -> Result<B, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_everything_else_is_refused() {
        assert_eq!(
            parse(r#"{"port": 587.0, "grace": 1.0}"#),
            Ok(B {
                port: 587,
                grace: Some(1)
            })
        );
        assert_eq!(
            parse(r#"{"port": 587}"#),
            Ok(B {
                port: 587,
                grace: None
            })
        );
        assert_eq!(
            parse(r#"{"port": 587, "grace": null}"#),
            Ok(B {
                port: 587,
                grace: None
            })
        );
        for bad in [
            r#"{"port": 587.5}"#,
            r#"{"port": -1}"#,
            r#"{"port": 65536}"#,
            r#"{"port": 1e300}"#,
            r#"{"port": "587"}"#,
            r#"{"port": 587, "grace": -1.0}"#,
            r#"{"port": 587, "port": 25}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // Said plainly: what is wrong.
        for (bad, said) in [
            (r#"{"port": 65536}"#, "is too large for this field"),
            (r#"{"port": 1e300}"#, "is too large for this field"),
            (r#"{"port": -1}"#, "must be a whole number, not negative"),
            (
                r#"{"port": 587, "grace": -1.0}"#,
                "must be a whole number, not negative",
            ),
            (r#"{"port": 587.5}"#, "expected a whole number"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(said), "{bad}: {e}");
        }
    }
}

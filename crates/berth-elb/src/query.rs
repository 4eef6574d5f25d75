//! The AWS Query protocol's request side: a form-urlencoded body
//! (`Action=CreateRule&Version=2015-12-01&Conditions.member.1.Field=path-pattern&…`)
//! becomes the operation name and a JSON tree of its parameters, which serde turns into
//! the typed inputs ([`from_tree`]).
//!
//! The tree: `A.B=x` nests objects; `A.member.N` makes a list ordered by N (1, 2, …,
//! no gaps); `A.entry.N.key`/`A.entry.N.value` makes a map; every leaf is a string
//! (the protocol has no types — [`from_tree`] reads numbers and booleans out of
//! strings). An empty value for a list (`Tags=`) is the empty list, as botocore sends it.
//!
//! Pure, and bounded: the body, the number of parameters, key lengths and nesting depth
//! are limited, so no input can make it allocate without bound or panic.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde_json::{Map, Value};

/// Largest request body accepted (bytes).
pub const MAX_BODY: usize = 1024 * 1024;
/// Most parameters (`key=value` pairs) in one request.
pub const MAX_PARAMS: usize = 10_000;
/// Longest parameter name (bytes).
pub const MAX_KEY_LEN: usize = 512;
/// Deepest nesting of a parameter name (dot-separated parts).
pub const MAX_DEPTH: usize = 24;
/// The API version this protocol speaks (the model's `apiVersion`).
pub const API_VERSION: &str = "2015-12-01";

/// Why a request body is not a Query request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("request has more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("parameter name '{0}' is malformed: {1}")]
    BadKey(String, &'static str),
    #[error("parameter '{0}' is given more than once")]
    Duplicate(String),
    #[error("parameter '{0}' is both a value and a structure")]
    Conflict(String),
    #[error("list '{0}' has a gap: member.{1} is missing")]
    Gap(String, usize),
    #[error(
        "missing Action parameter: say which operation to run, e.g. Action=DescribeLoadBalancers"
    )]
    MissingAction,
    #[error("Version '{0}' is not supported: this API speaks {API_VERSION}")]
    BadVersion(String),
}

/// An operation and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    pub action: String,
    pub params: Value,
}

/// A node of the tree while it is built: a leaf or a structure of named children.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

/// Parses a form-urlencoded Query request body.
pub fn parse(body: &[u8]) -> Result<QueryRequest, QueryError> {
    if body.len() > MAX_BODY {
        return Err(QueryError::TooLarge);
    }
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    let mut action = None;
    let mut version = None;
    for (n, (k, v)) in form_urlencoded::parse(body).enumerate() {
        if n >= MAX_PARAMS {
            return Err(QueryError::TooManyParams);
        }
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "Action" => {
                if action.replace(v).is_some() {
                    return Err(QueryError::Duplicate(k));
                }
            }
            "Version" => {
                if version.replace(v).is_some() {
                    return Err(QueryError::Duplicate(k));
                }
            }
            _ => insert(&mut root, &k, v)?,
        }
    }
    let action = action
        .filter(|a| !a.is_empty())
        .ok_or(QueryError::MissingAction)?;
    if let Some(v) = version {
        if v != API_VERSION {
            return Err(QueryError::BadVersion(v.chars().take(40).collect()));
        }
    }
    let params = to_value(Node::Branch(root), "")?;
    Ok(QueryRequest { action, params })
}

fn insert(root: &mut BTreeMap<String, Node>, key: &str, value: String) -> Result<(), QueryError> {
    let shown = || key.chars().take(80).collect::<String>();
    if key.len() > MAX_KEY_LEN {
        return Err(QueryError::BadKey(shown(), "too long"));
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() > MAX_DEPTH {
        return Err(QueryError::BadKey(shown(), "nested too deeply"));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(QueryError::BadKey(shown(), "empty name part"));
    }
    let (last, path) = parts.split_last().expect("split never yields nothing");
    let mut at = root;
    for p in path {
        let node = at
            .entry((*p).to_string())
            .or_insert_with(|| Node::Branch(BTreeMap::new()));
        at = match node {
            Node::Branch(m) => m,
            Node::Leaf(_) => return Err(QueryError::Conflict(shown())),
        };
    }
    match at.get(*last) {
        Some(Node::Leaf(_)) => Err(QueryError::Duplicate(shown())),
        Some(Node::Branch(_)) => Err(QueryError::Conflict(shown())),
        None => {
            at.insert((*last).to_string(), Node::Leaf(value));
            Ok(())
        }
    }
}

/// Index N of `member.N`/`entry.N` (1-based, decimal without sign or leading zero).
fn index(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 6 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn numbered(m: BTreeMap<String, Node>, path: &str) -> Result<Vec<(usize, Node)>, QueryError> {
    let mut items = Vec::with_capacity(m.len());
    for (k, v) in m {
        let i = index(&k).ok_or_else(|| {
            QueryError::BadKey(
                format!("{path}.{k}"),
                "list and map items are numbered 1, 2, …",
            )
        })?;
        items.push((i, v));
    }
    items.sort_by_key(|(i, _)| *i);
    for (want, (i, _)) in items.iter().enumerate() {
        if *i != want + 1 {
            return Err(QueryError::Gap(path.to_string(), want + 1));
        }
    }
    Ok(items)
}

fn to_value(node: Node, path: &str) -> Result<Value, QueryError> {
    let mut m = match node {
        Node::Leaf(s) => return Ok(Value::String(s)),
        Node::Branch(m) => m,
    };
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if m.len() == 1 {
        if let Some(Node::Branch(items)) = m.remove("member") {
            let mut out = Vec::with_capacity(items.len());
            for (_, v) in numbered(items, &join("member"))? {
                out.push(to_value(v, &join("member"))?);
            }
            return Ok(Value::Array(out));
        }
        if let Some(Node::Branch(items)) = m.remove("entry") {
            let mut out = Map::new();
            for (i, v) in numbered(items, &join("entry"))? {
                let at = join(&format!("entry.{i}"));
                let Node::Branch(mut kv) = v else {
                    return Err(QueryError::BadKey(at, "a map entry has a key and a value"));
                };
                let (Some(Node::Leaf(k)), value) = (kv.remove("key"), kv.remove("value")) else {
                    return Err(QueryError::BadKey(at, "a map entry needs key"));
                };
                if !kv.is_empty() {
                    return Err(QueryError::BadKey(at, "a map entry has only key and value"));
                }
                let value = match value {
                    Some(v) => to_value(v, &at)?,
                    None => Value::String(String::new()),
                };
                if out.insert(k.clone(), value).is_some() {
                    return Err(QueryError::Duplicate(format!("{at}.key={k}")));
                }
            }
            return Ok(Value::Object(out));
        }
    }
    let mut out = Map::new();
    for (k, v) in m {
        let at = join(&k);
        out.insert(k, to_value(v, &at)?);
    }
    Ok(Value::Object(out))
}

/// Reads a typed input out of a parameter tree: numbers and booleans from their
/// strings, an empty string as an empty list or structure.
pub fn from_tree<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    T::deserialize(Lenient(v)).map_err(|e| e.to_string())
}

/// A deserializer over a parameter tree that reads scalars out of strings.
struct Lenient(Value);

type DeError = de::value::Error;

impl Lenient {
    fn string(self) -> Result<String, DeError> {
        match self.0 {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(de::Error::custom(format!(
                "expected a value, got {}",
                kind(&other)
            ))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a structure",
    }
}

macro_rules! lenient_int {
    ($($method:ident => $visit:ident : $t:ty),*) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let s = self.string()?;
            let n: $t = s.trim().parse().map_err(|_| {
                de::Error::custom(format!("'{}' is not a valid number", s.chars().take(40).collect::<String>()))
            })?;
            visitor.$visit(n)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = DeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Object(o) => visitor.visit_map(MapAcc {
                iter: o.into_iter(),
                value: None,
            }),
        }
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.string()?.as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            other => Err(de::Error::custom(format!(
                "'{}' is not a boolean (true or false)",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    lenient_int!(
        deserialize_i8 => visit_i64: i64, deserialize_i16 => visit_i64: i64,
        deserialize_i32 => visit_i64: i64, deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u64: u64, deserialize_u16 => visit_u64: u64,
        deserialize_u32 => visit_u64: u64, deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f64: f64, deserialize_f64 => visit_f64: f64
    );

    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.string()?)
    }

    fn deserialize_str<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::String(s) if s.is_empty() => visitor.visit_seq(Seq(Vec::new().into_iter())),
            other => Err(de::Error::custom(format!(
                "expected a list (Name.member.N), got {}",
                kind(&other)
            ))),
        }
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Object(o) => visitor.visit_map(MapAcc {
                iter: o.into_iter(),
                value: None,
            }),
            Value::String(s) if s.is_empty() => visitor.visit_map(MapAcc {
                iter: Map::new().into_iter(),
                value: None,
            }),
            other => Err(de::Error::custom(format!(
                "expected a structure (Name.Member), got {}",
                kind(&other)
            ))),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_enum(self.string()?.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct identifier ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = DeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            Some(v) => seed.deserialize(Lenient(v)).map(Some),
            None => Ok(None),
        }
    }
}

struct MapAcc {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for MapAcc {
    type Error = DeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without a key"))?;
        seed.deserialize(Lenient(v))
    }
}

#[cfg(test)]
mod tests;

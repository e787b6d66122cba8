//! A read-only view of toml's spanned document tree that carries, for every
//! value, its full key path (`machines.a.services[1].kind`) and its line.
//!
//! serde's `deny_unknown_fields` would find unknown keys, but toml's serde
//! errors keep neither array indices nor the key path in a public field, and
//! the deployment file promises errors that name the full key. So the file
//! is parsed into toml's own spanned tree (`DeTable`) and read by hand
//! through these types, which know where they are.

use std::fmt::Display;
use std::str::FromStr;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::DeployError;

pub(super) type Result<T> = std::result::Result<T, DeployError>;

/// The file being read: its name and where its lines start, so that byte
/// offsets from spans become 1-based line numbers.
pub(super) struct Src<'t> {
    file: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> Src<'t> {
    pub fn new(text: &str, file: &'t str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Src { file, line_starts }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The 1-based column of byte `offset` (in bytes, like toml's own).
    pub fn column(&self, offset: usize) -> usize {
        let line = self.line(offset);
        offset - self.line_starts[line - 1] + 1
    }

    pub fn err(&self, key: &str, offset: usize, msg: impl Into<String>) -> DeployError {
        DeployError { file: self.file.to_string(), line: self.line(offset), key: key.to_string(), msg: msg.into() }
    }

    /// Wraps the document root.
    pub fn root<'a, 'i>(&'a self, doc: &'a Spanned<DeTable<'i>>) -> Table<'a, 'i> {
        Table { src: self, path: String::new(), start: doc.span().start, map: doc.get_ref() }
    }
}

/// `key` as it must be written in a key path: bare when TOML allows it,
/// quoted otherwise (a machine id may hold a `.`).
pub(super) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key_segment(key)
    } else {
        format!("{path}.{}", key_segment(key))
    }
}

/// One value of the document, and where it is.
pub(super) struct Node<'a, 'i> {
    src: &'a Src<'a>,
    path: String,
    value: &'a Spanned<DeValue<'i>>,
}

impl<'a, 'i> Node<'a, 'i> {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The line where the value starts.
    pub fn line(&self) -> usize {
        self.src.line(self.value.span().start)
    }

    /// An error about this value, at its line.
    pub fn err(&self, msg: impl Into<String>) -> DeployError {
        self.src.err(&self.path, self.value.span().start, msg)
    }

    fn expected(&self, what: &str) -> DeployError {
        self.err(format!("expected {what}, found {}", self.value.get_ref().type_str()))
    }

    pub fn str(&self) -> Result<&'a str> {
        match self.value.get_ref() {
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.expected("a string")),
        }
    }

    pub fn bool(&self) -> Result<bool> {
        match self.value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    pub fn int(&self) -> Result<i64> {
        match self.value.get_ref() {
            DeValue::Integer(i) => {
                i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| self.err(format!("integer {i} is out of range")))
            }
            _ => Err(self.expected("an integer")),
        }
    }

    /// A string parsed with `T::from_str`; the parse error's text becomes
    /// the message, so `Name`'s and `DialString`'s own wording reaches the
    /// user unchanged.
    pub fn parse<T>(&self) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.str()?.parse().map_err(|e: T::Err| self.err(e.to_string()))
    }

    pub fn array(&self) -> Result<Vec<Node<'a, 'i>>> {
        match self.value.get_ref() {
            DeValue::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| Node { src: self.src, path: format!("{}[{i}]", self.path), value })
                .collect()),
            _ => Err(self.expected("an array")),
        }
    }

    pub fn table(&self) -> Result<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Table(map) => {
                Ok(Table { src: self.src, path: self.path.clone(), start: self.value.span().start, map })
            }
            _ => Err(self.expected("a table")),
        }
    }
}

/// A table of the document, and where it is.
pub(super) struct Table<'a, 'i> {
    src: &'a Src<'a>,
    path: String,
    start: usize,
    map: &'a DeTable<'i>,
}

/// One `key = value` of a table.
pub(super) struct Entry<'a, 'i> {
    pub key: &'a str,
    /// Byte offset of the key, for errors about the key itself.
    offset: usize,
    pub node: Node<'a, 'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The entries in file order, so the first problem reported is the
    /// first one in the file (toml's map is sorted by key).
    pub fn entries(&self) -> Vec<Entry<'a, 'i>> {
        let mut entries: Vec<Entry<'a, 'i>> = self
            .map
            .iter()
            .map(|(key, value)| Entry {
                key: key.get_ref().as_ref(),
                offset: key.span().start,
                node: Node { src: self.src, path: child(&self.path, key.get_ref()), value },
            })
            .collect();
        entries.sort_by_key(|e| e.offset);
        entries
    }

    pub fn get(&self, key: &str) -> Option<Node<'a, 'i>> {
        self.map.get_key_value(key).map(|(_, value)| Node { src: self.src, path: child(&self.path, key), value })
    }

    /// An error about `entry`'s key (not its value), at the key's line.
    pub fn key_err(&self, entry: &Entry<'_, '_>, msg: impl Into<String>) -> DeployError {
        self.src.err(&entry.node.path, entry.offset, msg)
    }

    /// An error for a required `key` that is absent, at the table's line.
    pub fn missing(&self, key: &str, why: &str) -> DeployError {
        self.src.err(&child(&self.path, key), self.start, format!("missing: {why}"))
    }

    /// Fails on the first key, in file order, that is not in `known`.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<()> {
        match self.entries().into_iter().find(|e| !known.contains(&e.key)) {
            Some(e) => Err(self.key_err(&e, format!("unknown key; known keys: {}", known.join(", ")))),
            None => Ok(()),
        }
    }
}

//! Reading campaign files: every error names the file, the line, the column and the field
//! path (`steps[2].config.latency`).
//!
//! The YAML parser's location and `serde_path_to_error`'s path cover what fails while the
//! file is read (syntax, unknown fields, wrong types, durations that do not parse). Errors
//! found later, by semantic validation, carry a field path; [`locate`] finds that path's
//! line and column in the text by walking the document with the same YAML parser.

use std::fmt;
use std::path::Path;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::model::Campaign;

/// One problem in a campaign file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file (as given).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field path (`steps[1].plugin`); empty for the document itself.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Several diagnostics, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A campaign file's text and where it came from, kept for locating later errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file name (as given), or `<stdin>`, `<api>`.
    pub file: String,
    /// The text.
    pub text: String,
}

impl Source {
    /// A source from text.
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            file: file.into(),
            text: text.into(),
        }
    }

    /// Reads a file.
    pub fn read(path: &Path) -> Result<Self, Diagnostics> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source { file, text }),
            Err(e) => Err(Diagnostics(vec![Diagnostic {
                file,
                line: None,
                column: None,
                field: String::new(),
                message: format!("cannot be read: {e}"),
            }])),
        }
    }

    /// A diagnostic at `field` (a path such as `steps[1].plugin`), located in the text.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let at = locate(&self.text, field);
        Diagnostic {
            file: self.file.clone(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses a campaign; the error names the line, column and field of the first problem
/// (the parser cannot go on after a syntax or type error).
pub fn parse(source: &Source) -> Result<Campaign, Diagnostic> {
    let de = serde_yaml_ng::Deserializer::from_str(&source.text);
    serde_path_to_error::deserialize::<_, Campaign>(de).map_err(|e| {
        // A syntax error inside a value has an unknown last segment (`?`).
        let field = e.path().to_string();
        let field = field
            .trim_end_matches(".?")
            .trim_end_matches('?')
            .to_owned();
        let inner = e.into_inner();
        let loc = inner.location();
        Diagnostic {
            file: source.file.clone(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: clean_message(&inner.to_string(), &field),
            field: if field == "." { String::new() } else { field },
        }
    })
}

/// serde_yaml_ng puts the path before its messages and " at line L column C" after them;
/// the diagnostic has both already.
fn clean_message(m: &str, path: &str) -> String {
    let m = match m.rfind(" at line ") {
        Some(i) => &m[..i],
        None => m,
    };
    let m = match m.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && (path.starts_with(head) || head == ".") => {
            rest
        }
        _ => m,
    };
    m.to_owned()
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `steps[2].config.latency` into its segments.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Segment::Key(rest[..i].to_owned()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(n) = stripped[..end].parse() {
                    out.push(Segment::Index(n));
                }
                rest = &stripped[end + 1..];
            }
        } else {
            out.push(Segment::Key(rest.to_owned()));
        }
    }
    out
}

const FOUND: &str = "\u{0}ire-located\u{0}";

/// The 1-based (line, column) of the value at `path` in a YAML document, or of the nearest
/// enclosing value that exists (a missing field is reported where its mapping is).
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    // The deepest prefix of the path that exists.
    for n in (0..=segs.len()).rev() {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        match (Finder { path: &segs[..n] }).deserialize(de) {
            Err(e) if e.to_string().contains(FOUND) => {
                return e.location().map(|l| (l.line(), l.column()));
            }
            _ => continue,
        }
    }
    None
}

/// Walks down a path; at its end, fails inside the value's own deserialization so that the
/// parser attaches the value's position to the error.
struct Finder<'p> {
    path: &'p [Segment],
}

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            d.deserialize_any(Here)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Finder<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(Segment::Key(want)) = self.path.first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key::<KeyText>()? {
            if key.0.as_deref() == Some(want.as_str()) {
                return map.next_value_seed(Finder {
                    path: &self.path[1..],
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(Segment::Index(want)) = self.path.first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            if i == *want {
                return seq
                    .next_element_seed(Finder {
                        path: &self.path[1..],
                    })
                    .map(|_| ());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A mapping key as text (non-string keys are not matched).
struct KeyText(Option<String>);

impl<'de> serde::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_owned())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The visitor at the end of the path: fails on whatever it is given.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(A::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(A::Error::custom(FOUND))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: x\ntargets:\n  web:\n    adapter: local\nsteps:\n  - name: a\n    plugin: kill\n  - name: b\n    plugin: nope\n    config: {signal: KILL}\n";

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            segments("steps[2].config.latency"),
            vec![
                Segment::Key("steps".into()),
                Segment::Index(2),
                Segment::Key("config".into()),
                Segment::Key("latency".into())
            ]
        );
        assert_eq!(
            segments("targets.web"),
            vec![Segment::Key("targets".into()), Segment::Key("web".into())]
        );
    }

    #[test]
    fn values_are_located_by_path() {
        assert_eq!(locate(DOC, "steps[1].plugin"), Some((9, 13)));
        assert_eq!(locate(DOC, "steps[0].plugin"), Some((7, 13)));
        assert_eq!(locate(DOC, "targets.web.adapter"), Some((4, 14)));
        assert_eq!(locate(DOC, "steps[1].config.signal"), Some((10, 22)));
        // A missing field is reported where its parent is.
        assert_eq!(locate(DOC, "steps[1].target"), locate(DOC, "steps[1]"));
        assert_eq!(locate(DOC, "steps[1]"), Some((8, 5)));
    }
}

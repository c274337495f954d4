//! Paths naming a place in the configuration, such as `subnets[0].pools[1]`.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A struct field: `.name`.
    Field(String),
    /// A list element: `[index]`.
    Index(usize),
    /// A map key: `["key"]`.
    Key(String),
}

/// A path from the top of the file to one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath {
    segments: Vec<Segment>,
}

impl FieldPath {
    /// The path of a top-level field.
    pub(crate) fn field(name: &str) -> Self {
        Self {
            segments: vec![Segment::Field(name.to_string())],
        }
    }

    /// This path extended by a struct field.
    pub(crate) fn at(&self, name: &str) -> Self {
        self.with(Segment::Field(name.to_string()))
    }

    /// This path extended by a list index.
    pub(crate) fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    /// This path extended by a map key.
    pub(crate) fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_string()))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.segments.clone();
        segments.push(segment);
        Self { segments }
    }

    /// The steps of the path.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Converts the path `serde_path_to_error` tracked. A map key that follows a field named
    /// `options` is an option key; every other map key is a struct field. Unknown steps are
    /// left out.
    pub(crate) fn from_tracked(path: &serde_path_to_error::Path) -> Option<Self> {
        let mut segments = Vec::new();
        for segment in path.iter() {
            let previous_is_options =
                matches!(segments.last(), Some(Segment::Field(f)) if f == "options");
            segments.push(match segment {
                serde_path_to_error::Segment::Seq { index } => Segment::Index(*index),
                serde_path_to_error::Segment::Map { key } if previous_is_options => {
                    Segment::Key(key.clone())
                }
                serde_path_to_error::Segment::Map { key } => Segment::Field(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Segment::Field(variant.clone()),
                // a position between entries (e.g. a missing comma): the parent names it
                serde_path_to_error::Segment::Unknown => continue,
            });
        }
        (!segments.is_empty()).then_some(Self { segments })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rust() {
        let p = FieldPath::field("subnets").index(0).at("pools").index(1);
        assert_eq!(p.to_string(), "subnets[0].pools[1]");
        let o = FieldPath::field("subnets")
            .index(2)
            .at("options")
            .key("routers");
        assert_eq!(o.to_string(), "subnets[2].options[\"routers\"]");
    }
}

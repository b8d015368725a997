//! Where a key is in the document: key paths to lines, for error messages.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// `c2s.starttls_listen[1]` becomes `c2s.starttls_listen`: the line already says which element,
/// while `tls.certificate[0].domain` keeps its index since the key follows it.
pub(crate) fn trim_index(path: &str) -> &str {
    match path
        .strip_suffix(']')
        .and_then(|p| p.rfind('[').map(|i| &path[..i]))
    {
        Some(base) => base,
        None => path,
    }
}

/// Maps key paths to source positions, from a span-keeping parse of the document.
type Entry = (String, Range<usize>, Range<usize>, bool);

pub(crate) struct Locator<'a> {
    text: &'a str,
    /// (key path, span of the key, span of the value, is a scalar list element); list elements
    /// have no key of their own.
    entries: Vec<Entry>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        // Recoverable parsing still locates the keys before a syntax error.
        let (root, _errors) = DeTable::parse_recoverable(text);
        let mut entries = Vec::new();
        walk_table(root.get_ref(), "", &mut entries);
        Locator { text, entries }
    }

    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Line of `path`, or of its closest ancestor present in the file (a default value has none).
    pub(crate) fn line_of_key(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some((_, key, _, _)) = self.entries.iter().find(|e| e.0 == path) {
                return Some(self.line_of_offset(key.start));
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// `path` as shown to the reader: an index into a list of scalars is dropped (the line says
    /// which element), an index selecting a table is kept.
    pub(crate) fn display_path<'p>(&self, path: &'p str) -> &'p str {
        match self.entries.iter().find(|e| e.0 == path) {
            Some(e) if e.3 => trim_index(path),
            _ => path,
        }
    }

    /// The innermost entry whose key or value covers `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<&str> {
        let covers = |r: &Range<usize>| r.start <= offset && offset < r.end.max(r.start + 1);
        self.entries
            .iter()
            .filter_map(|(p, k, v, _)| {
                let best = [k, v]
                    .into_iter()
                    .filter(|r| covers(r))
                    .map(Range::len)
                    .min()?;
                Some((p, best))
            })
            // On equal spans the later entry is the deeper one (an array and its first table).
            .rev()
            .min_by_key(|(_, len)| *len)
            .map(|(p, _)| p.as_str())
    }
}

fn walk_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push((path.clone(), key.span(), value.span(), false));
        walk_value(value.get_ref(), &path, out);
    }
}

fn walk_value(value: &DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        DeValue::Table(t) => walk_table(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                let scalar = !matches!(item.get_ref(), DeValue::Table(_) | DeValue::Array(_));
                out.push((item_path.clone(), item.span(), item.span(), scalar));
                walk_value(item.get_ref(), &item_path, out);
            }
        }
        _ => {}
    }
}

//! Text to [`RawDefinition`]: syntax and structure errors, located and explained.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, Diagnostics, SourceFile, closest};
use super::raw::{RawDefinition, SCHEMA};

/// Parses a definition's text into its raw form, or explains every syntax error found.
pub fn parse(file: &SourceFile) -> Result<RawDefinition, Diagnostics> {
    let (tree, syntax_errors) = DeTable::parse_recoverable(file.text());
    if !syntax_errors.is_empty() {
        let mut all: Vec<Diagnostic> = syntax_errors.iter().map(|e| syntax(file, e)).collect();
        all.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
        return Err(Diagnostics(all));
    }
    toml::from_str::<RawDefinition>(file.text()).map_err(|e| structure(file, &tree, &e).into())
}

fn syntax(file: &SourceFile, error: &toml::de::Error) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim().replace('\n', "; ");
    let mut diagnostic = file.error_at(&span, format!("TOML syntax: {message}"));
    if message.contains("duplicate key") {
        diagnostic = diagnostic.help("each key and each [table] may appear only once");
    }
    diagnostic
}

/// A structure error (unknown key, wrong type, missing key), with its key path and help.
fn structure(
    file: &SourceFile,
    tree: &Spanned<DeTable<'_>>,
    error: &toml::de::Error,
) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    // An empty span is the document itself (a missing top-level key): no key to blame.
    let path = if span.is_empty() {
        Vec::new()
    } else {
        key_path(tree.get_ref(), span.start).unwrap_or_default()
    };
    let message = plain_words(error.message());
    let dotted = dotted(&path);
    let mut diagnostic = file.error_at(&span, message.clone());
    if !dotted.is_empty() {
        diagnostic = diagnostic.key(dotted.clone());
    }
    if message.starts_with("unknown key") {
        let table = schema_table(&path[..path.len().saturating_sub(1)]);
        let word = path.last().map_or("", |k| k.as_str());
        let table_name = if table.is_empty() {
            "the top level".to_owned()
        } else {
            format!("[{table}]")
        };
        diagnostic.message = format!("unknown key `{word}` in {table_name}");
        if let Some(valid) = SCHEMA
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, keys)| *keys)
        {
            if let Some(guess) = closest(word, valid.iter().copied()) {
                diagnostic = diagnostic.help(format!("did you mean `{guess}`?"));
            }
            diagnostic = diagnostic.help(format!("valid keys here: {}", valid.join(", ")));
        }
    } else if message.contains("did not match any variant") {
        let help = match schema_table(&path).as_str() {
            "users.range" => {
                "write `range = \"auto\"` or `range = { base = 524288, size = 65536 }`"
            }
            "resources.memory" => "write a size such as \"512M\" or \"2G\", or a number of bytes",
            _ => "see docs/definition.md for the values this key takes",
        };
        diagnostic.message = "this value has the wrong form".to_owned();
        diagnostic = diagnostic.help(help);
    } else if message.contains("expected an array") && schema_table(&path) == "storage.binds" {
        diagnostic = diagnostic
            .help("each bind is a table of its own: `[[storage.binds]]`, with two brackets");
    } else if message == "missing key `image`" {
        diagnostic.message = "no [image] table: every machine needs one".to_owned();
        diagnostic =
            diagnostic.help("add `[image]` with `source = \"oci:PATH:TAG\"` (or another source)");
    }
    diagnostic
}

/// serde's words for types, as a TOML user would say them.
fn plain_words(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: integer `")
        && let Some((number, tail)) = rest.split_once('`')
        && tail.starts_with(" as i128")
    {
        return format!("{number} is too large for this key");
    }
    let mut text = message.replace("field", "key");
    if let Some(i) = text.find("expected struct Raw") {
        text.replace_range(i.., "expected a table");
    }
    for (serde_word, toml_word) in [
        ("expected a sequence", "expected an array"),
        ("expected f64", "expected a number"),
        ("expected i64", "expected an integer"),
        ("invalid type: map", "invalid type: table"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: floating point", "invalid type: number"),
    ] {
        text = text.replace(serde_word, toml_word);
    }
    text
}

/// The keys leading to the deepest entry whose key or value covers `pos`. Array elements
/// appear as `[N]`, as in `storage.binds[1].target`.
fn key_path(table: &DeTable<'_>, pos: usize) -> Option<Vec<String>> {
    for (key, value) in table {
        let mut path = vec![key.get_ref().to_string()];
        if let Some(deeper) = value_path(value, pos) {
            path.extend(deeper);
            return Some(path);
        }
        if covers(&key.span(), pos) || covers(&value.span(), pos) {
            return Some(path);
        }
    }
    None
}

fn value_path(value: &Spanned<DeValue<'_>>, pos: usize) -> Option<Vec<String>> {
    match value.get_ref() {
        DeValue::Table(table) => key_path(table, pos),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(i, element)| {
            let deeper = value_path(element, pos);
            if deeper.is_none() && !covers(&element.span(), pos) {
                return None;
            }
            let mut path = vec![format!("[{i}]")];
            path.extend(deeper.unwrap_or_default());
            Some(path)
        }),
        _ => None,
    }
}

fn covers(span: &Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.is_empty() && span.start == pos)
}

/// `["storage", "binds", "[0]", "target"]` as `storage.binds[0].target`.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// The schema table a path is in, without array indices: `storage.binds`.
fn schema_table(path: &[String]) -> String {
    let names: Vec<String> = path
        .iter()
        .filter(|p| !p.starts_with('['))
        .cloned()
        .collect();
    names.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> Diagnostic {
        let file = SourceFile::new("t.toml", text);
        parse(&file).unwrap_err().0.remove(0)
    }

    #[test]
    fn unknown_keys_are_located_and_suggested() {
        let d = error("[image]\nsource = 'oci:x'\n[exec]\ncomand = ['a']\n");
        assert_eq!(d.key.as_deref(), Some("exec.comand"));
        assert_eq!(d.message, "unknown key `comand` in [exec]");
        assert_eq!(
            d.location.as_ref().map(|l| (l.line, l.column)),
            Some((4, 1))
        );
        assert_eq!(d.help[0], "did you mean `command`?");
    }

    #[test]
    fn keys_inside_arrays_of_tables_are_named_with_their_index() {
        let text = "[image]\nsource = 'oci:x'\n[[storage.binds]]\nsource = '/a'\ntarget = '/a'\n[[storage.binds]]\nsorce = '/b'\n";
        let d = error(text);
        assert_eq!(d.key.as_deref(), Some("storage.binds[1].sorce"));
        assert_eq!(d.help[0], "did you mean `source`?");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let d = error("[image]\nsource = 'oci:x'\n[exec]\nboot = 'yes'\n");
        assert_eq!(d.key.as_deref(), Some("exec.boot"));
        assert!(d.message.contains("expected a boolean"), "{}", d.message);
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let file = SourceFile::new("t.toml", "a = \nb = ]\n");
        let all = parse(&file).unwrap_err();
        assert!(!all.0.is_empty());
        assert!(all.0.iter().all(|d| d.message.starts_with("TOML syntax")));
    }
}

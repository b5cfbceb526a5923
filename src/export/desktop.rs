//! `.desktop` entries (the freedesktop Desktop Entry spec): the machine's entry parsed,
//! and the host's copy written with its `Exec` pointing at mm's launcher.
//!
//! The machine's file is hostile input. Only the `[Desktop Entry]` group is read, only
//! the keys below are kept (no `TryExec`, actions or D-Bus activation), values with control
//! characters are refused, an `Icon` that is a path (inside the machine) is dropped, and
//! nothing of the file is ever run on the host: its `Exec` becomes arguments of a program
//! run inside the machine.

/// The keys copied to the host's entry, as they are.
const KEPT: &[&str] = &[
    "Name",
    "GenericName",
    "Comment",
    "Icon",
    "Terminal",
    "Categories",
    "MimeType",
    "Keywords",
    "StartupNotify",
    "StartupWMClass",
    "NoDisplay",
];

/// What mm takes from a machine's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kept keys and their values, in [`KEPT`]'s order.
    pub keys: Vec<(&'static str, String)>,
    /// The program and its fixed arguments.
    pub argv: Vec<String>,
    /// The file or URL field code (`%f`, `%F`, `%u`, `%U`) the host's entry passes on.
    pub field: Option<String>,
}

/// Why an entry cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesktopError {
    #[error("it has no [Desktop Entry] group")]
    NoGroup,
    #[error("it is of Type `{0}`, not Application")]
    NotApplication(String),
    #[error("it has no Exec line")]
    NoExec,
    #[error("line {line}: {why}")]
    Bad { line: usize, why: String },
}

/// Parses the text of an entry.
pub fn parse(text: &str) -> Result<Entry, DesktopError> {
    let mut in_group = false;
    let mut seen_group = false;
    let mut values: Vec<(String, String, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(group) = line.strip_prefix('[') {
            in_group = group.trim_end() == "Desktop Entry]";
            seen_group |= in_group;
            continue;
        }
        if !in_group {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(DesktopError::Bad {
                line: line_no,
                why: "not KEY=VALUE".to_owned(),
            });
        };
        let (key, value) = (key.trim(), value.trim());
        if value.chars().any(char::is_control) {
            return Err(DesktopError::Bad {
                line: line_no,
                why: format!("the value of {key} has control characters"),
            });
        }
        // Localized keys (Name[de]) are left out: the host's entry has the plain ones.
        values.push((key.to_owned(), value.to_owned(), line_no));
    }
    if !seen_group {
        return Err(DesktopError::NoGroup);
    }
    let get = |k: &str| values.iter().find(|(key, _, _)| key == k);
    match get("Type") {
        Some((_, t, _)) if t == "Application" => {}
        Some((_, t, _)) => return Err(DesktopError::NotApplication(t.clone())),
        None => return Err(DesktopError::NotApplication(String::new())),
    }
    let (_, exec, exec_line) = get("Exec").ok_or(DesktopError::NoExec)?;
    let (argv, field) = exec_args(&unescape(exec)).map_err(|why| DesktopError::Bad {
        line: *exec_line,
        why,
    })?;
    if argv.is_empty() {
        return Err(DesktopError::NoExec);
    }
    let keys = KEPT
        .iter()
        .filter_map(|k| get(k).map(|(_, v, _)| (*k, v.clone())))
        .filter(|(k, v)| *k != "Icon" || !v.contains('/'))
        .collect();
    Ok(Entry { keys, argv, field })
}

/// The string escapes of a value (`\s`, `\n`, `\t`, `\r`, `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `Exec`'s arguments (quoted ones unquoted), without field codes; the file or URL code,
/// if any. Deprecated and informational codes (`%i`, `%c`, `%k`, `%d`, …) are dropped.
fn exec_args(exec: &str) -> Result<(Vec<String>, Option<String>), String> {
    let mut args: Vec<String> = Vec::new();
    let mut field = None;
    let mut chars = exec.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            chars.next();
            quoted = true;
            loop {
                match chars.next() {
                    None => return Err("Exec has an unclosed quote".to_owned()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '`' | '$' | '\\')) => arg.push(c),
                        _ => return Err("Exec has a bad escape in quotes".to_owned()),
                    },
                    Some(c) => arg.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if matches!(
                    c,
                    '"' | '\'' | '`' | '$' | '\\' | '>' | '<' | '|' | ';' | '&'
                ) {
                    return Err(format!("Exec has `{c}` outside quotes"));
                }
                arg.push(c);
                chars.next();
            }
        }
        if !quoted {
            match arg.as_str() {
                "%f" | "%F" | "%u" | "%U" => {
                    field.get_or_insert(arg);
                    continue;
                }
                a if a.len() == 2 && a.starts_with('%') && a != "%%" => continue,
                _ => {}
            }
        }
        args.push(arg.replace("%%", "%"));
    }
    Ok((args, field))
}

/// Quotes an `Exec` argument for the host's entry (then escaped as a string value).
fn exec_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    let quoted = if plain {
        arg.to_owned()
    } else {
        let mut q = String::from("\"");
        for c in arg.chars() {
            if matches!(c, '"' | '`' | '$' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    quoted.replace('\\', "\\\\").replace('%', "%%")
}

/// The host's entry: the kept keys, `Name` marked with the machine, and `Exec` running
/// `launcher` with the entry's field code.
pub fn host_entry(entry: &Entry, marker: &str, machine: &str, launcher: &str) -> String {
    let mut s = format!(
        "{}{marker}\n[Desktop Entry]\nType=Application\n",
        super::launcher::MARKER
    );
    for (key, value) in &entry.keys {
        if *key == "Name" {
            s.push_str(&format!("Name={value} ({machine})\n"));
        } else {
            s.push_str(&format!("{key}={value}\n"));
        }
    }
    let mut exec = exec_quote(launcher);
    if let Some(field) = &entry.field {
        exec.push(' ');
        exec.push_str(field);
    }
    s.push_str(&format!("Exec={exec}\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_entry_group_and_kept_keys_are_read() {
        let text = "[Desktop Entry]\nType=Application\nName=Edit\nName[de]=Bearbeiten\n\
                    Exec=/usr/bin/edit --new-window \"a b\" %U %i\nTryExec=/bin/evil\n\
                    Icon=/usr/share/icons/x.png\nTerminal=false\n\
                    [Desktop Action x]\nExec=/bin/evil\n";
        let entry = parse(text).unwrap();
        assert_eq!(entry.argv, ["/usr/bin/edit", "--new-window", "a b"]);
        assert_eq!(entry.field.as_deref(), Some("%U"));
        assert_eq!(
            entry.keys,
            [
                ("Name", "Edit".to_owned()),
                ("Terminal", "false".to_owned())
            ]
        );
        let host = host_entry(&entry, "{}", "dev", "/home/u/.local/bin/mm dev-edit");
        assert!(
            host.contains("Exec=\"/home/u/.local/bin/mm dev-edit\" %U\n"),
            "{host}"
        );
        assert!(host.contains("Name=Edit (dev)\n"));
        assert!(!host.contains("evil"));
    }

    #[test]
    fn hostile_entries_are_refused() {
        assert_eq!(parse("Exec=x\n"), Err(DesktopError::NoGroup));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nExec=sh -c `id`\n"),
            Err(DesktopError::Bad { line: 3, .. })
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Link\nExec=x\n"),
            Err(DesktopError::NotApplication(_))
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nName=a\u{1b}b\nExec=x\n"),
            Err(DesktopError::Bad { line: 3, .. })
        ));
    }
}

//! The text of a launcher: a POSIX shell script that runs one program inside a machine
//! through `mm exec`, and shell quoting for what it names.

use std::path::Path;

/// Quotes `text` for a POSIX shell: single quotes, with `'` as `'\''`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a launcher needs to know.
pub struct Launcher<'a> {
    /// The marker line's JSON.
    pub marker: &'a str,
    pub machine: &'a str,
    /// The machine's definition, by absolute path (for `mm start`).
    pub definition: &'a Path,
    /// mm, by absolute path.
    pub mm: &'a Path,
    /// `MM_ROOT` and `MM_PATH` as they were at export time (`None`: unset).
    pub env: &'a [(&'static str, Option<String>)],
    /// The program inside the machine, and fixed arguments before the caller's.
    pub argv: &'a [String],
}

/// The marker every file mm exports starts with (after a launcher's `#!`).
pub const MARKER: &str = "# mm-export: ";

impl Launcher<'_> {
    /// The script. It starts the machine when it is stopped (waiting for it, as
    /// `mm start` does; a machine another launcher started meanwhile is fine), then
    /// replaces itself with `mm exec`, whose exit status (128+N for signal N) is the
    /// launcher's; the caller's arguments go through `"$@"` untouched.
    pub fn script(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s.push_str(&format!("{MARKER}{}\n", self.marker));
        s.push_str(&format!(
            "# Runs {} in machine {} (mm starts it if it is stopped).\n# Written by `mm export`; \
             `mm unexport {}` removes it.\n",
            // Escaped: a newline in a path must not end the comment.
            self.argv
                .first()
                .map_or(String::new(), |a| a.escape_debug().to_string()),
            self.machine,
            self.machine
        ));
        for (name, value) in self.env {
            match value {
                Some(value) => s.push_str(&format!("{name}={}\nexport {name}\n", quote(value))),
                None => s.push_str(&format!("unset {name}\n")),
            }
        }
        let mm = quote(&self.mm.to_string_lossy());
        let machine = quote(self.machine);
        s.push_str(&format!("mm={mm}\n"));
        s.push_str(&format!(
            "if ! \"$mm\" status {machine} >/dev/null 2>&1; then\n  \
             \"$mm\" start {} >/dev/null\n  rc=$?\n  \
             if [ \"$rc\" -ne 0 ] && [ \"$rc\" -ne 75 ]; then exit \"$rc\"; fi\nfi\n",
            quote(&self.definition.to_string_lossy())
        ));
        let argv: Vec<String> = self.argv.iter().map(|a| quote(a)).collect();
        s.push_str(&format!(
            "exec \"$mm\" exec {machine} -- {} \"$@\"\n",
            argv.join(" ")
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        for text in [
            "plain",
            "",
            "it's",
            "a b",
            "$HOME `x` \\ \"q\"",
            "new\nline",
        ] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", quote(text))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
        }
    }
}

//! Machine names: the definition file's stem, which must be a valid hostname label.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine's name; also its hostname, its machined name and its directory name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MachineName(String);

impl MachineName {
    /// Accepts a hostname label (RFC 1123): 1 to 63 ASCII letters, digits and hyphens,
    /// neither starting nor ending with a hyphen.
    pub fn new(name: &str) -> Result<Self, String> {
        // Messages show the name with control and bidirectional characters escaped, so
        // that a name cannot rewrite the terminal line it is printed on.
        let shown = name.escape_debug();
        if name.is_empty() {
            return Err("a machine name cannot be empty".to_owned());
        }
        if name.len() > 63 {
            return Err(format!(
                "`{shown}` is {} characters long; a hostname label has at most 63",
                name.len()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            let bad = bad.escape_debug();
            return Err(format!(
                "`{shown}` contains `{bad}`; a machine name is a hostname label: letters, digits and `-`"
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(format!(
                "`{shown}` starts or ends with `-`, which a hostname label cannot"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_labels_only() {
        assert!(MachineName::new("web").is_ok());
        assert!(MachineName::new("dev-2").is_ok());
        for bad in [
            "",
            "-web",
            "web-",
            "my_web",
            "web.example",
            "wéb",
            &"a".repeat(64),
        ] {
            assert!(MachineName::new(bad).is_err(), "{bad}");
        }
    }
}

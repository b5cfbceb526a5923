//! What every verb prints goes through here: text and JSON on standard output, with a
//! closed pipe (`mm list | head`) reported as such rather than as a failure to write.

use std::io::Write;

use serde::Serialize;

use mm::error::Error;

pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

pub fn print_json(value: &impl Serialize) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.into()))?;
    text.push('\n');
    print(&text)
}

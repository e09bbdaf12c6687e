//! Text from outside (a hook's output, the API's messages) on its way to a log line, a terminal
//! or a hook's environment: control characters escaped, so that it can neither forge a log line
//! nor send a terminal escape sequence, and its length bounded.

/// The most bytes of one outside text that are kept.
pub(crate) const MAX_TEXT: usize = 4096;

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...), cut at [`MAX_TEXT`] bytes.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT));
    for c in s.chars() {
        if out.len() >= MAX_TEXT {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_bounded() {
        assert_eq!(
            printable("ok\n2026-01-01 ERROR forged\u{1b}[2J\r"),
            "ok\\n2026-01-01 ERROR forged\\u{1b}[2J\\r"
        );
        assert_eq!(printable("Zertifikat läuft ab"), "Zertifikat läuft ab");
        assert!(printable(&"x".repeat(10_000)).len() <= MAX_TEXT + 3);
    }
}

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

/// A unix time as logs and messages show it: RFC 3339, UTC.
pub(crate) fn time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// [`time`] of an optional time, `-` for none.
pub(crate) fn maybe_time(t: Option<i64>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// A duration in plain units: `250 ms`, `19.9 s`, `10 min`, `6 h`, `30 d`.
pub(crate) fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    let (value, unit) = match s {
        s if s < 1.0 => return format!("{} ms", d.as_millis()),
        s if s < 120.0 => (s, "s"),
        s if s < 7_200.0 => (s / 60.0, "min"),
        s if s < 172_800.0 => (s / 3_600.0, "h"),
        s => (s / 86_400.0, "d"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
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

    /// Logs showed `not_after=2027-06-18 8:01:35.0 +00:00:00` and `after 19.890832952s`.
    #[test]
    fn times_are_rfc_3339_and_durations_plain() {
        assert_eq!(time(1_813_305_695), "2027-06-18T08:01:35Z");
        assert_eq!(maybe_time(None), "-");
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration(Duration::from_secs_f64(19.890_832_952)), "19.9 s");
        assert_eq!(duration(Duration::from_secs(600)), "10 min");
        assert_eq!(duration(Duration::from_secs(21_600)), "6 h");
        assert_eq!(duration(Duration::from_secs(30 * 86_400)), "30 d");
    }
}

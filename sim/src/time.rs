//! The API's own timestamp format, `2018-12-12T11:05:25.000+0100`: milliseconds and an offset
//! without a colon. It is not RFC 3339, so it gets its own formatter and parser.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const API_FORMAT: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
);

/// Formats a point in time the way the AutoDNS API writes it, in UTC (`+0000`).
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(API_FORMAT)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000+0000"))
}

/// Parses the API's format, falling back to RFC 3339.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, API_FORMAT)
        .ok()
        .or_else(|| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

/// The current time, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_api_documentation() {
        let t = time::macros::datetime!(2018-12-12 10:05:25.123 UTC);
        assert_eq!(format(t), "2018-12-12T10:05:25.123+0000");
    }

    #[test]
    fn parses_offsets_without_a_colon() {
        let t = parse("2018-12-12T11:05:25.000+0100").unwrap();
        assert_eq!(t, time::macros::datetime!(2018-12-12 10:05:25 UTC));
        assert!(parse("2018-12-12T11:05:25+01:00").is_some());
        assert!(parse("yesterday").is_none());
    }
}

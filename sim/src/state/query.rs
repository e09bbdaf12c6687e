//! The query language of the search routes: filters (operators, AND/OR links, nesting), orders
//! and the view (offset, limit). Each route documents the keys it takes; any other key, in a
//! filter or an order, is refused as the real API refuses it (HTTP 400, `EF00022`).

use super::{ApiError, Result};
use crate::wire::{Query, QueryFilter};

/// The documented search keys of `POST /job/_search` and `/job/history/_search`.
pub(super) const JOB_KEYS: &[&str] = &[
    "parent",
    "execution",
    "subStatus",
    "type",
    "created",
    "id",
    "updated",
    "status",
    "object",
    "action",
];

/// The documented search keys of `POST /certificate/_search`.
pub(super) const CERTIFICATE_KEYS: &[&str] = &[
    "product",
    "technical",
    "orderId",
    "created",
    "admin",
    "type",
    "expire",
    "domain",
    "name",
    "comment",
    "id",
    "updated",
    "authentication",
];

/// The documented search keys of `POST /sslcontact/_search`.
pub(super) const CONTACT_KEYS: &[&str] = &[
    "country",
    "fname",
    "address",
    "city",
    "created",
    "title",
    "lname",
    "phone",
    "organization",
    "state",
    "id",
    "fax",
    "pcode",
    "updated",
    "email",
];

/// The operators of the spec's `Operator`.
const OPS: &[&str] = &[
    "EQUAL",
    "NOT_EQUAL",
    "LIKE",
    "NOT_LIKE",
    "ILIKE",
    "GREATER",
    "GREATER_EQUAL",
    "LESS",
    "LESS_EQUAL",
    "NOT_LESS",
    "NOT_GREATER",
    "NOT_LESS_EQUAL",
    "NOT_GREATER_EQUAL",
    "IS_NULL",
    "IS_NOT_NULL",
    "IN",
    "NOT_IN",
];

/// Applies a `Query`'s filters, orders and view (offset, limit), with only the `keys` the route
/// documents. Returns the total before paging.
pub(super) fn filter_page<'a, T>(
    items: Vec<&'a T>,
    q: &Query,
    keys: &[&str],
    field: impl Fn(&T, &str) -> Option<String>,
) -> Result<(i64, Vec<&'a T>)> {
    for (i, f) in q.filters.iter().enumerate() {
        check_filter(f, &format!("filters[{i}]"), keys)?;
    }
    for (i, o) in q.orders.iter().enumerate() {
        let key = o.key.as_deref().unwrap_or_default();
        if !keys.contains(&key) {
            return Err(ApiError::key_not_allowed(&format!("orders[{i}]/key"), key));
        }
        if let Some(kind) = o.kind.as_deref()
            && kind != "ASC"
            && kind != "DESC"
        {
            return Err(ApiError::field(
                "0000",
                "orders.type",
                format!("unknown order type '{kind}' (use ASC or DESC)"),
            ));
        }
    }
    let mut matched: Vec<&T> = items
        .into_iter()
        .filter(|i| matches_all(&q.filters, &|k| field(i, k)))
        .collect();
    for o in q.orders.iter().rev() {
        let key = o.key.as_deref().unwrap_or_default();
        let desc = o.kind.as_deref() == Some("DESC");
        matched.sort_by(|a, b| {
            let ord = match (field(a, key), field(b, key)) {
                (Some(x), Some(y)) => compare(&x, &y),
                (x, y) => x.is_some().cmp(&y.is_some()),
            };
            if desc { ord.reverse() } else { ord }
        });
    }
    let total = matched.len() as i64;
    let view = q.view.clone().unwrap_or_default();
    let offset = view.offset.unwrap_or(0).max(0) as usize;
    let limit = view.limit.filter(|l| *l > 0).map(|l| l as usize).unwrap_or(usize::MAX);
    Ok((total, matched.into_iter().skip(offset).take(limit).collect()))
}

fn check_filter(f: &QueryFilter, place: &str, keys: &[&str]) -> Result<()> {
    if let Some(op) = &f.operator
        && !OPS.contains(&op.as_str())
    {
        return Err(ApiError::field(
            "0000",
            "filters.operator",
            format!("unknown operator '{op}'"),
        ));
    }
    if let Some(link) = &f.link
        && link != "AND"
        && link != "OR"
    {
        return Err(ApiError::field(
            "0000",
            "filters.link",
            format!("unknown link '{link}' (use AND or OR)"),
        ));
    }
    match &f.key {
        Some(key) if !keys.contains(&key.as_str()) => {
            return Err(ApiError::key_not_allowed(&format!("{place}/key"), key));
        }
        None if f.filters.is_empty() => {
            return Err(ApiError::field(
                "0000",
                "filters.key",
                "a filter needs a key or nested filters",
            ));
        }
        _ => {}
    }
    for (i, inner) in f.filters.iter().enumerate() {
        check_filter(inner, &format!("{place}/filters[{i}]"), keys)?;
    }
    Ok(())
}

/// Filters joined by their `link` (AND unless OR), left to right.
fn matches_all(filters: &[QueryFilter], field: &dyn Fn(&str) -> Option<String>) -> bool {
    let mut result: Option<bool> = None;
    for f in filters {
        let m = matches_one(f, field);
        result = Some(match (result, f.link.as_deref()) {
            (None, _) => m,
            (Some(acc), Some("OR")) => acc || m,
            (Some(acc), _) => acc && m,
        });
    }
    result.unwrap_or(true)
}

/// Compares as times, then as numbers, then as text ignoring case.
fn compare(actual: &str, v: &str) -> std::cmp::Ordering {
    match (crate::time::parse(actual), crate::time::parse(v)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => match (actual.parse::<i64>(), v.parse::<i64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => actual.to_ascii_lowercase().cmp(&v.to_ascii_lowercase()),
        },
    }
}

/// One filter: its own condition and, if it has any, its nested filters (a group).
fn matches_one(f: &QueryFilter, field: &dyn Fn(&str) -> Option<String>) -> bool {
    let Some(key) = f.key.as_deref() else {
        return matches_all(&f.filters, field);
    };
    let op = f.operator.as_deref().unwrap_or("EQUAL");
    let actual = field(key);
    let own = match (op, actual) {
        ("IS_NULL", a) => a.is_none(),
        ("IS_NOT_NULL", a) => a.is_some(),
        (_, None) => false,
        (op, Some(actual)) => {
            let values: Vec<String> = f
                .values
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(f.value.clone())
                .collect();
            let cmp = |v: &String| compare(&actual, v);
            let like = |v: &String| like_match(v, &actual);
            let ilike = |v: &String| like_match(&v.to_lowercase(), &actual.to_lowercase());
            match op {
                "EQUAL" | "IN" => values.iter().any(|v| cmp(v).is_eq()),
                "NOT_EQUAL" | "NOT_IN" => values.iter().all(|v| !cmp(v).is_eq()),
                "LIKE" => values.iter().any(like),
                "NOT_LIKE" => !values.iter().any(like),
                "ILIKE" => values.iter().any(ilike),
                "GREATER" | "NOT_LESS_EQUAL" => values.iter().any(|v| cmp(v).is_gt()),
                "LESS" | "NOT_GREATER_EQUAL" => values.iter().any(|v| cmp(v).is_lt()),
                "GREATER_EQUAL" | "NOT_LESS" => values.iter().any(|v| cmp(v).is_ge()),
                "LESS_EQUAL" | "NOT_GREATER" => values.iter().any(|v| cmp(v).is_le()),
                _ => false,
            }
        }
    };
    if f.filters.is_empty() {
        own
    } else {
        own && matches_all(&f.filters, field)
    }
}

/// The API's LIKE (SQL's): `%` matches any run of characters, everything else itself (a `*`
/// too); case counts (ILIKE ignores it).
fn like_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_filters_use_percent_wildcards_and_a_star_is_itself() {
        assert!(like_match("%.example.com", "www.example.com"));
        assert!(like_match("www%", "www.example.com"));
        assert!(like_match("w%example%", "www.example.com"));
        assert!(!like_match("%.example.org", "www.example.com"));
        assert!(like_match("exact", "exact"));
        assert!(!like_match("*.example.com", "www.example.com"));
        assert!(like_match("*.example.com", "*.example.com"));
        assert!(!like_match("WWW%", "www.example.com"));
    }

    #[test]
    fn an_undocumented_key_is_refused_where_it_stands() {
        let q: Query = serde_json::from_value(serde_json::json!({"filters": [
            {"key": "id", "value": "1"},
            {"link": "OR", "filters": [{"key": "status", "value": "SUCCESS"}, {"key": "ctid", "value": "x"}]}
        ]}))
        .unwrap();
        let items: Vec<&u8> = vec![];
        let e = filter_page(items, &q, JOB_KEYS, |_, _| None).unwrap_err();
        assert_eq!((e.http, e.messages[0].code.as_str()), (400, "EF00022"));
        assert_eq!(e.messages[0].objects[0].kind, "filters[1]/filters[1]/key");
        assert_eq!(e.messages[0].objects[0].value, "ctid");
    }

    #[test]
    fn nested_filters_group_with_and_or_links() {
        // name = a AND (status = x OR status = y)
        let q: Query = serde_json::from_value(serde_json::json!({"filters": [
            {"key": "object", "value": "a"},
            {"link": "AND", "filters": [{"key": "status", "value": "x"}, {"key": "status", "value": "y", "link": "OR"}]}
        ]}))
        .unwrap();
        let items = [("a", "x"), ("a", "y"), ("a", "z"), ("b", "x")];
        let (total, found) = filter_page(items.iter().collect(), &q, JOB_KEYS, |i, k| match k {
            "object" => Some(i.0.to_string()),
            "status" => Some(i.1.to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(total, 2);
        assert_eq!(found, [&("a", "x"), &("a", "y")]);
    }
}

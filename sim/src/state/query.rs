//! The query language of the search routes: filters (operators, AND/OR links, nesting) and the
//! view (offset, limit).

use super::{ApiError, Result};
use crate::wire::{Query, QueryFilter};

/// Applies a `Query`'s filters, then its view (offset, limit). Returns the total before paging.
pub(super) fn filter_page<'a, T>(
    items: Vec<&'a T>,
    q: &Query,
    field: impl Fn(&T, &str) -> Option<String>,
) -> Result<(i64, Vec<&'a T>)> {
    for f in &q.filters {
        check_filter(f)?;
    }
    let matched: Vec<&T> = items
        .into_iter()
        .filter(|i| matches_all(&q.filters, &|k| field(i, k)))
        .collect();
    let total = matched.len() as i64;
    let view = q.view.clone().unwrap_or_default();
    let offset = view.offset.unwrap_or(0).max(0) as usize;
    let limit = view.limit.filter(|l| *l > 0).map(|l| l as usize).unwrap_or(usize::MAX);
    Ok((total, matched.into_iter().skip(offset).take(limit).collect()))
}

fn check_filter(f: &QueryFilter) -> Result<()> {
    if let Some(op) = &f.operator {
        const OPS: &[&str] = &[
            "EQUAL",
            "NOT_EQUAL",
            "LIKE",
            "NOT_LIKE",
            "GREATER",
            "LESS",
            "GREATER_EQUAL",
            "LESS_EQUAL",
            "IN",
            "NOT_IN",
        ];
        if !OPS.contains(&op.as_str()) {
            return Err(ApiError::field(
                "0000",
                "filters.operator",
                format!("unknown operator '{op}'"),
            ));
        }
    }
    if f.key.is_none() && f.filters.is_empty() {
        return Err(ApiError::field(
            "0000",
            "filters.key",
            "a filter needs a key or nested filters",
        ));
    }
    f.filters.iter().try_for_each(check_filter)
}

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

fn matches_one(f: &QueryFilter, field: &dyn Fn(&str) -> Option<String>) -> bool {
    if f.key.is_none() {
        return matches_all(&f.filters, field);
    }
    let key = f.key.as_deref().unwrap_or_default();
    let Some(actual) = field(key) else { return false };
    let op = f.operator.as_deref().unwrap_or("EQUAL");
    let values: Vec<String> = f
        .values
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(f.value.clone())
        .collect();
    let cmp = |v: &String| -> std::cmp::Ordering {
        match (crate::time::parse(&actual), crate::time::parse(v)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => match (actual.parse::<i64>(), v.parse::<i64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => actual.to_ascii_lowercase().cmp(&v.to_ascii_lowercase()),
            },
        }
    };
    let like = |v: &String| wildcard_match(&v.to_ascii_lowercase(), &actual.to_ascii_lowercase());
    let own = match op {
        "EQUAL" | "IN" => values.iter().any(|v| cmp(v).is_eq()),
        "NOT_EQUAL" | "NOT_IN" => values.iter().all(|v| !cmp(v).is_eq()),
        "LIKE" => values.iter().any(like),
        "NOT_LIKE" => !values.iter().any(like),
        "GREATER" => values.iter().any(|v| cmp(v).is_gt()),
        "LESS" => values.iter().any(|v| cmp(v).is_lt()),
        "GREATER_EQUAL" => values.iter().any(|v| cmp(v).is_ge()),
        "LESS_EQUAL" => values.iter().any(|v| cmp(v).is_le()),
        _ => false,
    };
    if f.filters.is_empty() {
        own
    } else {
        own && matches_all(&f.filters, field)
    }
}

/// `*` matches any run of characters (the API's LIKE syntax).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
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
    fn like_filters_use_star_wildcards() {
        assert!(wildcard_match("*.example.com", "www.example.com"));
        assert!(wildcard_match("www*", "www.example.com"));
        assert!(wildcard_match("w*example*", "www.example.com"));
        assert!(!wildcard_match("*.example.org", "www.example.com"));
        assert!(wildcard_match("exact", "exact"));
    }
}

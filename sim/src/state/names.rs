//! The naming rules: which host names, wildcards and mailboxes a product can certify, and how
//! many.

use super::{ApiError, Result};
use crate::config::Product;

/// Checks names against what a product allows; returns them lower-cased and deduplicated.
pub(super) fn check_names(task: &str, product: &Product, names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.to_ascii_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(ApiError::field(task, "name", "no name given"));
    }
    if out.len() > product.max_names {
        return Err(ApiError::field(
            task,
            "subjectAlternativeNames",
            format!(
                "{} allows at most {} names, the request has {}",
                product.name,
                product.max_names,
                out.len()
            ),
        ));
    }
    for n in &out {
        let ok = if product.certificate_type == "MAIL" {
            is_mailbox(n)
        } else {
            is_hostname(n, product.wildcard)
        };
        if !ok {
            let what = if product.certificate_type == "MAIL" {
                "an e-mail address"
            } else {
                "a host name this product can certify"
            };
            return Err(ApiError::field(task, "name", format!("'{n}' is not {what}")));
        }
    }
    Ok(out)
}

fn is_hostname(n: &str, wildcard: bool) -> bool {
    let n = n.strip_prefix("*.").filter(|_| wildcard).unwrap_or(n);
    let labels: Vec<&str> = n.split('.').collect();
    n.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && !labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
}

fn is_mailbox(n: &str) -> bool {
    match n.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(char::is_whitespace) && is_hostname(domain, false)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_mailboxes_and_wildcards_are_judged_per_product() {
        assert!(is_hostname("www.example.com", false));
        assert!(!is_hostname("*.example.com", false));
        assert!(is_hostname("*.example.com", true));
        assert!(!is_hostname("localhost", false));
        assert!(!is_hostname("10.0.0.1", false));
        assert!(!is_hostname("-a.example.com", false));
        assert!(is_mailbox("joe.sample@example.com"));
        assert!(!is_mailbox("example.com"));
    }
}

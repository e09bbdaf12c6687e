//! The JSON API's routes: finding one from a method and path, and the names faults are keyed by.

use axum::http::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Hello,
    ContactCreate,
    ContactInfo(i64),
    ContactSearch,
    Prepare,
    Create,
    Reissue(i64),
    Renew(i64),
    Info(i64),
    Search,
    Revoke(i64),
    Delete(i64),
    Poll,
    PollConfirm(i64),
    JobInfo(i64),
    JobSearch,
    JobHistoryInfo(i64),
    JobHistorySearch,
}

impl Route {
    /// The name faults are keyed by, e.g. `PUT /certificate/{id}`.
    pub(super) fn key(self) -> &'static str {
        match self {
            Self::Hello => "GET /hello",
            Self::ContactCreate => "POST /sslcontact",
            Self::ContactInfo(_) => "GET /sslcontact/{id}",
            Self::ContactSearch => "POST /sslcontact/_search",
            Self::Prepare => "POST /certificate/_prepareOrder",
            Self::Create => "POST /certificate",
            Self::Reissue(_) => "PUT /certificate/{id}",
            Self::Renew(_) => "PUT /certificate/{id}/_renew",
            Self::Info(_) => "GET /certificate/{id}",
            Self::Search => "POST /certificate/_search",
            Self::Revoke(_) => "POST /certificate/{id}/_revoke",
            Self::Delete(_) => "DELETE /certificate/{id}",
            Self::Poll => "GET /poll",
            Self::PollConfirm(_) => "PUT /poll/{id}",
            Self::JobInfo(_) => "GET /job/{id}",
            Self::JobSearch => "POST /job/_search",
            Self::JobHistoryInfo(_) => "GET /job/history/{id}",
            Self::JobHistorySearch => "POST /job/history/_search",
        }
    }
}

/// Every route key, for documentation and validation of fault settings.
pub const ROUTE_KEYS: &[&str] = &[
    "GET /hello",
    "POST /sslcontact",
    "GET /sslcontact/{id}",
    "POST /sslcontact/_search",
    "POST /certificate/_prepareOrder",
    "POST /certificate",
    "PUT /certificate/{id}",
    "PUT /certificate/{id}/_renew",
    "GET /certificate/{id}",
    "POST /certificate/_search",
    "POST /certificate/{id}/_revoke",
    "DELETE /certificate/{id}",
    "GET /poll",
    "PUT /poll/{id}",
    "GET /job/{id}",
    "POST /job/_search",
    "GET /job/history/{id}",
    "POST /job/history/_search",
];

/// Finds the route; `Err((true, _))` means the path exists with another method, `Err((_, Some(id)))`
/// that an id in the path is not a number.
pub(super) fn route_of(method: &Method, path: &str) -> Result<Route, (bool, Option<String>)> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err((false, None));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match match_route(method.as_str(), &segs) {
        Some(found) => found.map_err(|bad| (false, Some(bad))),
        None => {
            let known = ["GET", "POST", "PUT", "DELETE"]
                .iter()
                .any(|m| *m != method.as_str() && match_route(m, &segs).is_some());
            Err((known, None))
        }
    }
}

fn match_route(m: &str, segs: &[&str]) -> Option<Result<Route, String>> {
    let id = |s: &str| s.parse::<i64>().map_err(|_| s.to_string());
    let found = match (m, segs) {
        ("GET", ["hello"]) => Ok(Route::Hello),
        ("POST", ["sslcontact"]) => Ok(Route::ContactCreate),
        ("POST", ["sslcontact", "_search"]) => Ok(Route::ContactSearch),
        ("GET", ["sslcontact", i]) => id(i).map(Route::ContactInfo),
        ("POST", ["certificate", "_prepareOrder" | "prepareOrder"]) => Ok(Route::Prepare),
        ("POST", ["certificate", "_search"]) => Ok(Route::Search),
        ("POST", ["certificate"]) => Ok(Route::Create),
        ("PUT", ["certificate", i]) => id(i).map(Route::Reissue),
        ("PUT", ["certificate", i, "_renew"]) => id(i).map(Route::Renew),
        ("GET", ["certificate", i]) => id(i).map(Route::Info),
        ("DELETE", ["certificate", i]) => id(i).map(Route::Delete),
        ("POST", ["certificate", i, "_revoke"]) => id(i).map(Route::Revoke),
        ("GET", ["poll"]) => Ok(Route::Poll),
        ("PUT", ["poll", i]) => id(i).map(Route::PollConfirm),
        ("POST", ["job", "_search"]) => Ok(Route::JobSearch),
        ("GET", ["job", i]) => id(i).map(Route::JobInfo),
        ("POST", ["job", "history", "_search"]) => Ok(Route::JobHistorySearch),
        ("GET", ["job", "history", i]) => id(i).map(Route::JobHistoryInfo),
        _ => return None,
    };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_method_and_path() {
        assert_eq!(
            route_of(&Method::POST, "/v1/certificate/_prepareOrder"),
            Ok(Route::Prepare)
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/certificate/prepareOrder"),
            Ok(Route::Prepare)
        );
        assert_eq!(
            route_of(&Method::PUT, "/v1/certificate/42/_renew"),
            Ok(Route::Renew(42))
        );
        assert_eq!(
            route_of(&Method::PUT, "/v1/poll/4297000000"),
            Ok(Route::PollConfirm(4_297_000_000))
        );
        assert_eq!(
            route_of(&Method::GET, "/v1/job/history/4297000001"),
            Ok(Route::JobHistoryInfo(4_297_000_001))
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/job/history/_search"),
            Ok(Route::JobHistorySearch)
        );
        assert_eq!(route_of(&Method::PATCH, "/v1/certificate/42"), Err((true, None)));
        assert_eq!(route_of(&Method::GET, "/v1/nothing"), Err((false, None)));
        assert_eq!(
            route_of(&Method::GET, "/v1/certificate/abc"),
            Err((false, Some("abc".into())))
        );
    }
}

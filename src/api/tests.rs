use super::*;
use tokio::time::Instant;

#[test]
fn answers_are_classified_by_what_they_mean_for_a_paid_request() {
    let ok = br#"{"status":{"code":"N400101","text":"started","type":"NOTIFY"},"data":[{"id":4297000000}]}"#;
    assert!(Client::check(StatusCode::OK, None, ok).is_ok());
    let refused = br#"{"status":{"code":"E400101","text":"invalid","type":"ERROR"},"messages":[{"code":"EF1","text":"csr is required"}]}"#;
    let e = Client::check(StatusCode::BAD_REQUEST, None, refused).unwrap_err();
    assert!(!e.outcome_unknown() && !e.is_retryable());
    assert!(e.to_string().contains("csr is required"), "{e}");
    let e = Client::check(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        br#"{"status":{"code":"E0500","text":"x","type":"ERROR"}}"#,
    )
    .unwrap_err();
    assert!(e.outcome_unknown() && e.is_retryable());
    let e = Client::check(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>").unwrap_err();
    assert!(matches!(e, Error::Garbled { http: 502, .. }) && e.outcome_unknown());
    let e = Client::check(StatusCode::OK, None, br#"{"stid":"1","status":{"code":"S0"#).unwrap_err();
    assert!(matches!(e, Error::Garbled { .. }));
    let e = Client::check(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(2)), b"").unwrap_err();
    assert!(!e.outcome_unknown() && e.retry_after() == Some(Duration::from_secs(2)));
}

/// A finished job is not served at `GET /job/{id}`: the API answers 404, or names EF300101
/// among its messages; either way the job is unknown there, and nothing else is.
#[test]
fn a_job_unknown_at_its_route_is_told_from_other_refusals() {
    let gone = br#"{"status":{"code":"E300114","text":"x","type":"ERROR"},"messages":[{"code":"EF300101","text":"Der Auftrag wurde nicht gefunden."}]}"#;
    let e = Client::check(StatusCode::NOT_FOUND, None, gone).unwrap_err();
    assert!(e.is_job_unknown() && e.has_code("EF300101") && e.has_code("E300114"));
    let e = Client::check(StatusCode::BAD_REQUEST, None, gone).unwrap_err();
    assert!(e.is_job_unknown() && !e.is_not_found());
    let other = br#"{"status":{"code":"E0304","text":"x","type":"ERROR"},"messages":[{"code":"EF03014","text":"EF300101 lookalike"}]}"#;
    let e = Client::check(StatusCode::BAD_REQUEST, None, other).unwrap_err();
    assert!(!e.is_job_unknown() && !e.has_code("EF300101"));
    let e = Client::check(StatusCode::INTERNAL_SERVER_ERROR, None, gone).unwrap_err();
    assert!(!e.is_job_unknown(), "a server failure proves nothing about the job");
}

#[tokio::test]
async fn the_poll_queue_answer_says_how_many_messages_wait() {
    let client = answer_once(
        r#"{"status":{"code":"S0905","text":"ok","type":"SUCCESS"},"object":{"type":"message","value":"7","summary":3},"data":[{"id":7,"job":{"id":2,"status":"SUCCESS","type":"ssl"}}]}"#,
    )
    .await;
    let p = client.poll_queue().await.unwrap();
    assert_eq!((p.message.map(|m| m.id), p.queued), (Some(7), Some(3)));
}

/// A one-shot HTTP server on loopback that answers any request with `body`.
async fn answer_once(body: &'static str) -> Client {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        }
    });
    Client::new(&ApiConfig {
        url,
        user: "u".into(),
        context: 4,
        password: Secret::new("p".into()),
        password_file: None,
        roots: crate::config::Roots::default(),
        ca_pem: None,
        timeout: Duration::from_secs(5),
        rate_limit: 100.0,
    })
    .unwrap()
}

/// An answer to `GET /job/1` about job 2 used to be adopted as job 1's outcome.
#[tokio::test]
async fn an_answer_about_another_job_is_not_taken_for_the_one_asked_about() {
    let client = answer_once(
        r#"{"status":{"code":"S0105","text":"ok","type":"SUCCESS"},"data":[{"job":{"id":2,"status":"SUCCESS"},"object":{"type":"certificate","value":"9"}}]}"#,
    )
    .await;
    let e = client.job(1).await.unwrap_err();
    assert!(e.to_string().contains("about job 2"), "{e}");
}

/// The API's words reach logs, the terminal and on_failure: control characters escaped.
#[test]
fn api_text_cannot_forge_a_log_line_or_reach_the_terminal() {
    let body = "{\"status\":{\"code\":\"E1\",\"text\":\"bad\\n2026-12-01T00:00:00Z  INFO certkeeper: forged\\u001b[2J\",\"type\":\"ERROR\"},\"messages\":[{\"code\":\"EF1\",\"text\":\"x\\ry\"}]}";
    let e = Client::check(StatusCode::BAD_REQUEST, None, body.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n') && !e.contains('\r') && !e.contains('\u{1b}'), "{e:?}");
    assert!(e.contains("bad\\n2026") && e.contains("x\\ry"), "{e}");
    let e = Client::check(StatusCode::OK, None, b"\x1b[2J<html>\n")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\u{1b}') && !e.contains('\n'), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn the_rate_limiter_spaces_requests() {
    let limiter = RateLimiter::new(3.0);
    let start = Instant::now();
    for _ in 0..7 {
        limiter.acquire().await;
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1990) && elapsed < Duration::from_millis(2100),
        "{elapsed:?}"
    );
}

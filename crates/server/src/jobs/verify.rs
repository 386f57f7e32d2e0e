//! The job verifier: a background task per server instance that returns expired
//! reservations to `open` and runs the automated checks of queued submissions.
//!
//! Work is claimed with one conditional update (`queued`/`transient_error` and due, or
//! `running` with an expired lease → `running`, `attempts + 1`, a lease), so several
//! instances on one database never check the same submission at once; the result is
//! recorded only if the submission is still `running` at that attempt and `submitted`
//! (an operator's decision in the meantime wins, and pays once).
//!
//! Checks:
//! - social_share: GET `post_url` (time limit, [`MAX_PAGE_BYTES`], at most
//!   [`MAX_REDIRECTS`] redirects and only to accepted post hosts). The page must be the post
//!   itself: its `<head>` names it with a canonical link or `og:url` equal to `post_url` (or
//!   to the accepted URL it redirected to), else `needs_human` (a search page, a soft 404 or
//!   any page that echoes URLs is not evidence). The post page must contain the tracked URL
//!   (raw or HTML-escaped) → `verified` (paid); the post without it, or 404/410 →
//!   `rejected`; the link without the message text, 401/403/other 4xx, or a page over the
//!   size limit without the link → `needs_human`; timeouts, connection errors, 429 and 5xx →
//!   `transient_error`, retried after `backoff * 2^(attempt-1)`, and `needs_human` after the
//!   last attempt.
//! - workflow_creation: the workflow exists, is published and its graph is well-formed
//!   and non-empty → `verified`, else `rejected`.

use super::{decide, find_submission, Decision, PostHosts, SubmissionRow, SUBMISSION_COLUMNS};
use crate::db::macros::{sql_execute, sql_fetch_all, sql_scalar_optional};
use crate::db::AsConn;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::workflows::schedules::db_now;
use crate::workflows::{find_any, graph};
use agentpmt_protocol::workflows::WorkflowGraph;
use std::sync::Arc;
use std::time::Duration;

/// Largest page read, in bytes.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Most redirects followed.
pub const MAX_REDIRECTS: usize = 5;
/// Most submissions checked per tick.
const BATCH: i64 = 10;

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified(String),
    Rejected(String),
    Transient(String),
    NeedsHuman(String),
}

/// The HTTP client of the verifier: time limit, bounded redirects to accepted hosts only.
pub fn client(state: &AppState) -> reqwest::Result<reqwest::Client> {
    let hosts = Arc::new(PostHosts::parse(&state.config.job_post_hosts).unwrap_or_default());
    let timeout = Duration::from_millis(state.config.job_verify_timeout_ms);
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt
            .url()
            .host_str()
            .is_some_and(|h| hosts.allows(None, h))
        {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(policy)
        .user_agent("agentpmt-job-verifier/1")
        .build()
}

/// Runs until `stop` changes.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let http = match client(&state) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "the job verifier cannot start: no HTTP client");
            return;
        }
    };
    let period = Duration::from_millis(state.config.job_verify_interval_ms.max(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = expire_reservations(&state).await {
                    tracing::warn!(error = %e.message(), "job reservation expiry failed");
                }
                match run_once(&state, &http).await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e.message(), "job verification failed"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Returns jobs whose reservation expired to `open` (reserve does it lazily too).
pub async fn expire_reservations(state: &AppState) -> ApiResult<u64> {
    let mut conn = state.db.write().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    Ok(sql_execute!(
        conn.conn(),
        "UPDATE jobs SET status = 'open', reserved_by = NULL, reserved_until_ms = NULL, \
           updated_at_ms = $1 WHERE status = 'reserved' AND reserved_until_ms <= $1",
        now
    )?)
}

/// Claims and checks up to a batch of due submissions; returns how many were checked.
pub async fn run_once(state: &AppState, http: &reqwest::Client) -> ApiResult<usize> {
    let candidates: Vec<SubmissionRow> = {
        let mut conn = state.db.read().await?;
        let now = db_now(&mut conn, state.db.backend()).await?;
        let sql = format!(
            "SELECT {SUBMISSION_COLUMNS} FROM job_submissions WHERE status = 'submitted' AND \
               ((verification_status IN ('queued', 'transient_error') AND next_attempt_at_ms <= $1) \
                OR (verification_status = 'running' AND lease_until_ms <= $1)) \
             ORDER BY next_attempt_at_ms LIMIT $2"
        );
        sql_fetch_all!(conn.conn(), SubmissionRow, &sql, now, BATCH)?
    };
    let mut checked = 0;
    for candidate in candidates {
        let Some(attempt) = claim(state, &candidate.submission_id).await? else {
            continue;
        };
        let outcome = check(state, http, &candidate).await;
        record(state, &candidate.submission_id, attempt, outcome).await?;
        checked += 1;
    }
    Ok(checked)
}

/// Leases one submission for a check; returns the attempt number when this call won it.
async fn claim(state: &AppState, submission_id: &str) -> ApiResult<Option<i64>> {
    let mut conn = state.db.write().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let lease = i64::try_from(state.config.job_verify_timeout_ms)
        .unwrap_or(120_000)
        .saturating_mul(3)
        .saturating_add(30_000);
    Ok(sql_scalar_optional!(
        conn.conn(),
        i64,
        "UPDATE job_submissions SET verification_status = 'running', attempts = attempts + 1, \
           lease_until_ms = $1, updated_at_ms = $2, owner_instance = $4 \
         WHERE submission_id = $3 AND status = 'submitted' AND \
           ((verification_status IN ('queued', 'transient_error') AND next_attempt_at_ms <= $2) \
            OR (verification_status = 'running' AND lease_until_ms <= $2)) \
         RETURNING attempts",
        now.saturating_add(lease),
        now,
        submission_id,
        &*state.instance.id
    )?)
}

/// Ends the leases of checks held by instances that are no longer alive (see
/// [`crate::instances`]): the next [`run_once`] checks those submissions again (a new
/// attempt). Returns how many.
pub async fn expire_orphaned(
    conn: &mut impl AsConn,
    me: &str,
    alive_after: i64,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE job_submissions SET lease_until_ms = 0 WHERE status = 'submitted' \
         AND verification_status = 'running' AND lease_until_ms > 0 AND {}",
        crate::instances::orphaned("job_submissions", "$1", "$2")
    );
    sql_execute!(conn.conn(), &sql, me, alive_after)
}

/// Records the outcome of attempt `attempt`, if the submission is still ours.
async fn record(
    state: &AppState,
    submission_id: &str,
    attempt: i64,
    outcome: Outcome,
) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    let now = db_now(&mut tx, state.db.backend()).await?;
    let Some(submission) = find_submission(&mut tx, submission_id).await? else {
        return Ok(());
    };
    if submission.status != "submitted"
        || submission.verification_status != "running"
        || submission.attempts != attempt
    {
        // An operator decided, or our lease expired and another attempt took over.
        return Ok(());
    }
    let max = i64::from(state.config.job_verify_max_attempts);
    let outcome = match outcome {
        Outcome::Transient(reason) if attempt >= max => {
            Outcome::NeedsHuman(format!("{reason} (gave up after {attempt} attempts)"))
        }
        other => other,
    };
    match &outcome {
        Outcome::Verified(reason) => {
            decide(
                &mut tx,
                &submission,
                Decision::Approve,
                "automated",
                Some(reason),
                now,
            )
            .await?;
        }
        Outcome::Rejected(reason) => {
            decide(
                &mut tx,
                &submission,
                Decision::Reject,
                "automated",
                Some(reason),
                now,
            )
            .await?;
        }
        Outcome::Transient(reason) => {
            let base = i64::try_from(state.config.job_verify_backoff_ms).unwrap_or(i64::MAX);
            let shift = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
            let delay = base.saturating_mul(1i64 << shift);
            sql_execute!(
                tx.conn(),
                "UPDATE job_submissions SET verification_status = 'transient_error', \
                   verification_reason = $1, next_attempt_at_ms = $2, lease_until_ms = NULL, \
                   updated_at_ms = $3 \
                 WHERE submission_id = $4 AND status = 'submitted' \
                   AND verification_status = 'running' AND attempts = $5",
                reason,
                now.saturating_add(delay),
                now,
                submission_id,
                attempt
            )?;
        }
        Outcome::NeedsHuman(reason) => {
            sql_execute!(
                tx.conn(),
                "UPDATE job_submissions SET verification_status = 'needs_human', \
                   verification_reason = $1, lease_until_ms = NULL, updated_at_ms = $2 \
                 WHERE submission_id = $3 AND status = 'submitted' \
                   AND verification_status = 'running' AND attempts = $4",
                reason,
                now,
                submission_id,
                attempt
            )?;
        }
    }
    tx.commit().await?;
    tracing::info!(submission_id, attempt, outcome = ?outcome, "job submission checked");
    Ok(())
}

/// Runs the automated check of one submission.
pub async fn check(
    state: &AppState,
    http: &reqwest::Client,
    submission: &SubmissionRow,
) -> Outcome {
    if let Some(workflow_id) = submission.workflow_id.as_deref() {
        return check_workflow(state, workflow_id).await;
    }
    let posts = submission.posts();
    let Some(post) = posts.first() else {
        return Outcome::NeedsHuman("no automated check for this job type".to_owned());
    };
    let tracked = {
        let Ok(mut conn) = state.db.read().await else {
            return Outcome::Transient("database unavailable".to_owned());
        };
        match sql_scalar_optional!(
            conn.conn(),
            Option<String>,
            "SELECT tracked_url FROM job_reservations WHERE reservation_id = $1",
            &submission.reservation_id
        ) {
            Ok(found) => found.flatten().unwrap_or_default(),
            Err(_) => return Outcome::Transient("database unavailable".to_owned()),
        }
    };
    check_post(http, &post.post_url, &tracked, &post.message_text).await
}

async fn check_workflow(state: &AppState, workflow_id: &str) -> Outcome {
    let Ok(mut conn) = state.db.read().await else {
        return Outcome::Transient("database unavailable".to_owned());
    };
    match find_any(&mut conn, workflow_id).await {
        Err(_) => Outcome::Transient("database unavailable".to_owned()),
        Ok(None) => Outcome::Rejected("the workflow no longer exists".to_owned()),
        Ok(Some(row)) if row.status != "published" => {
            Outcome::Rejected("the workflow is not published".to_owned())
        }
        Ok(Some(row)) => match serde_json::from_str::<WorkflowGraph>(&row.graph) {
            Ok(g) if !g.nodes.is_empty() && graph::validate(&g).is_ok() => {
                Outcome::Verified("the published workflow exists and is well-formed".to_owned())
            }
            _ => Outcome::Rejected("the workflow's graph is not well-formed".to_owned()),
        },
    }
}

/// Common HTML escapes undone, whitespace collapsed.
fn normalize(text: &str) -> String {
    let unescaped = text
        .replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x26;", "&")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    unescaped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Fetches `post_url` and looks for `tracked` (and `message`, when not empty) on the page.
pub async fn check_post(
    http: &reqwest::Client,
    post_url: &str,
    tracked: &str,
    message: &str,
) -> Outcome {
    let mut response = match http.get(post_url).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Transient("the post page timed out".into()),
        Err(e) if e.is_redirect() => {
            return Outcome::NeedsHuman("the post page redirects too often".into())
        }
        Err(_) => return Outcome::Transient("the post page could not be reached".into()),
    };
    let status = response.status().as_u16();
    match status {
        200..=299 => {}
        300..=399 => {
            return Outcome::NeedsHuman(format!(
                "the post page redirects outside the accepted hosts (HTTP {status})"
            ))
        }
        404 | 410 => return Outcome::Rejected(format!("the post does not exist (HTTP {status})")),
        408 | 425 | 429 | 500..=599 => {
            return Outcome::Transient(format!("the post page answered HTTP {status}"))
        }
        _ => {
            return Outcome::NeedsHuman(format!(
                "the post page is not readable automatically (HTTP {status})"
            ))
        }
    }
    let mut page: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_PAGE_BYTES - page.len();
                if chunk.len() > room {
                    page.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                page.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return Outcome::Transient("the post page timed out".into())
            }
            Err(_) => return Outcome::Transient("the post page was cut off".into()),
        }
    }
    let final_url = response.url().to_string();
    let raw = String::from_utf8_lossy(&page);
    if !names_the_post(&raw, post_url, &final_url) {
        return Outcome::NeedsHuman(
            "the page does not identify itself as the post (no canonical link or og:url equal to post_url)"
                .into(),
        );
    }
    let text = normalize(&raw);
    if tracked.is_empty() || !text.contains(&normalize(tracked)) {
        return if truncated {
            Outcome::NeedsHuman("the post page is too large to check automatically".into())
        } else {
            Outcome::Rejected("the post page does not contain the tracked link".into())
        };
    }
    let message = normalize(message);
    if !message.is_empty() && !text.contains(&message) {
        return Outcome::NeedsHuman(
            "the tracked link is on the page but the message text was not found".into(),
        );
    }
    Outcome::Verified("the post page contains the tracked link".into())
}

/// Whether the page's `<head>` names it as the post: a `rel=canonical` link or an `og:url`
/// meta tag equal to `post_url` or to `final_url` (where the accepted redirects led).
/// Tags outside `<head>` (an echo of submitted markup lands in the body) do not count.
pub fn names_the_post(html: &str, post_url: &str, final_url: &str) -> bool {
    let document = scraper::Html::parse_document(html);
    let selectors = [
        ("head link[rel~=\"canonical\" i]", "href"),
        ("head meta[property=\"og:url\" i]", "content"),
    ];
    let wanted: Vec<UrlKey> = [post_url, final_url]
        .iter()
        .filter_map(|u| UrlKey::parse(u))
        .collect();
    selectors.iter().any(|(selector, attr)| {
        let Ok(selector) = scraper::Selector::parse(selector) else {
            return false;
        };
        document
            .select(&selector)
            .filter_map(|e| e.value().attr(attr))
            .filter_map(UrlKey::parse)
            .any(|named| wanted.iter().any(|w| named.names(w)))
    })
}

/// The parts of a URL that identify a post: host (lowercase, without `www.`/`m.`/`mobile.`),
/// port, path without a trailing slash, and query pairs.
#[derive(Debug, PartialEq, Eq)]
struct UrlKey {
    host: String,
    port: Option<u16>,
    path: String,
    query: Vec<(String, String)>,
}

impl UrlKey {
    fn parse(text: &str) -> Option<UrlKey> {
        let url = reqwest::Url::parse(text.trim()).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        let host = ["www.", "mobile.", "m."]
            .iter()
            .find_map(|p| host.strip_prefix(p))
            .unwrap_or(&host)
            .to_owned();
        let path = url.path().trim_end_matches('/').to_owned();
        Some(UrlKey {
            host,
            port: url.port_or_known_default(),
            path,
            query: url.query_pairs().into_owned().collect(),
        })
    }

    /// Whether a page naming itself `self` is the post at `post`: same host, port and path,
    /// and every query pair of the canonical form present in the post URL (post URLs often
    /// carry share parameters the canonical form drops; some posts are identified by theirs).
    fn names(&self, post: &UrlKey) -> bool {
        self.host == post.host
            && self.port == post.port
            && self.path == post.path
            && self.query.iter().all(|pair| post.query.contains(pair))
    }
}

#[cfg(test)]
mod tests {
    use super::names_the_post;

    const POST: &str = "https://x.com/agent/status/123";

    fn page(head: &str, body: &str) -> String {
        format!("<!doctype html><html><head>{head}</head><body>{body}</body></html>")
    }

    #[test]
    fn the_post_names_itself_in_its_head() {
        for head in [
            r#"<link rel="canonical" href="https://x.com/agent/status/123">"#,
            r#"<link rel="Canonical" href="https://www.x.com/agent/status/123/">"#,
            r#"<meta property="og:url" content="https://x.com/agent/status/123">"#,
        ] {
            assert!(names_the_post(&page(head, ""), POST, POST), "{head}");
        }
        // Share parameters on the submitted URL are fine; the canonical form's own are not.
        let head = r#"<link rel="canonical" href="https://x.com/agent/status/123">"#;
        assert!(names_the_post(
            &page(head, ""),
            &format!("{POST}?s=20"),
            POST
        ));
        let head = r#"<link rel="canonical" href="https://x.com/agent/status/123?id=9">"#;
        assert!(!names_the_post(&page(head, ""), POST, POST));
        // Redirected to an accepted URL that the page names.
        let head = r#"<link rel="canonical" href="https://x.com/agent/status/123">"#;
        assert!(names_the_post(
            &page(head, ""),
            "https://twitter.com/agent/status/123",
            POST
        ));
    }

    #[test]
    fn echoes_and_other_pages_are_not_the_post() {
        // No identity at all (a search page or a soft 404 that echoes the URL).
        assert!(!names_the_post(
            &page("<title>Search</title>", POST),
            POST,
            POST
        ));
        // Another page's identity.
        let head = r#"<link rel="canonical" href="https://x.com/search">"#;
        assert!(!names_the_post(&page(head, ""), POST, POST));
        // Markup echoed into the body is not in the head.
        let echoed = r#"<link rel="canonical" href="https://x.com/agent/status/123">"#;
        assert!(!names_the_post(
            &page("<title>t</title>", echoed),
            POST,
            POST
        ));
        // Inside a comment or a script it is not a tag.
        let head = r#"<!-- <link rel="canonical" href="https://x.com/agent/status/123"> --><script>var a='<link rel="canonical" href="https://x.com/agent/status/123">'</script>"#;
        assert!(!names_the_post(&page(head, ""), POST, POST));
        // Another host or port.
        let head = r#"<link rel="canonical" href="https://x.com.evil.example/agent/status/123">"#;
        assert!(!names_the_post(&page(head, ""), POST, POST));
    }
}

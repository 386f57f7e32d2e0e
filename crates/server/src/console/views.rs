//! Pieces the console's pages share: paged tables and search forms, the SVG bar chart, links
//! to external URLs, amounts and times, and the notice of an action's outcome.

use crate::error::{ApiError, ApiResult};
use maud::{html, Markup};
use serde::Deserialize;

/// `?page=` (1-based) and `?q=` of a list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub page: Option<i64>,
    pub q: Option<String>,
    pub status: Option<String>,
}

impl ListQuery {
    /// The page number, at least 1 and at most 10^6.
    pub fn page(&self) -> i64 {
        self.page.unwrap_or(1).clamp(1, 1_000_000)
    }

    /// `LIMIT` (one more row than shown, to know whether a next page exists) and `OFFSET`.
    pub fn limit_offset(&self) -> (i64, i64) {
        (super::PAGE_SIZE + 1, (self.page() - 1) * super::PAGE_SIZE)
    }

    /// The search text, trimmed and at most 200 characters.
    pub fn search(&self) -> String {
        self.q
            .as_deref()
            .unwrap_or("")
            .trim()
            .chars()
            .take(200)
            .collect()
    }

    /// One page of `rows`, fetched with [`ListQuery::limit_offset`].
    pub fn paged<T>(&self, mut rows: Vec<T>) -> Paged<T> {
        let more = trim_page(&mut rows);
        Paged {
            rows,
            number: self.page(),
            more,
        }
    }
}

/// One page of a list: at most [`super::PAGE_SIZE`] rows, and whether more follow.
#[derive(Debug)]
pub struct Paged<T> {
    pub rows: Vec<T>,
    /// 1-based.
    pub number: i64,
    pub more: bool,
}

/// Keeps at most a page of `rows`; `true` when there was more.
fn trim_page<T>(rows: &mut Vec<T>) -> bool {
    let more = rows.len() as i64 > super::PAGE_SIZE;
    rows.truncate(super::PAGE_SIZE as usize);
    more
}

/// Previous / next links of a list at `path` (which may carry a query already).
pub fn pager(path: &str, page: i64, more: bool) -> Markup {
    let sep = if path.contains('?') { '&' } else { '?' };
    html! {
        nav.pager {
            @if page > 1 {
                a rel="prev" href={(path) (sep) "page=" (page - 1)} { "← Previous" }
            }
            span { "Page " (page) }
            @if more {
                a rel="next" href={(path) (sep) "page=" (page + 1)} { "Next →" }
            }
        }
    }
}

/// A case-insensitive `LIKE` pattern matching text that contains `search` (its `%`, `_` and
/// `\` escaped with `\`; the SQL says `ESCAPE '\'`).
pub fn like_pattern(search: &str) -> String {
    let mut out = String::with_capacity(search.len() + 2);
    out.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// `path` with `params` as its query string (percent-encoded).
pub fn href(path: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<_> = params.iter().filter(|(_, v)| !v.is_empty()).collect();
    if params.is_empty() {
        return path.to_owned();
    }
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(params).unwrap_or_default()
    )
}

/// A table of `rows` under `headings`, one `row` (a `tr`) each, or one line saying `empty`.
pub fn table<T>(
    id: &str,
    headings: &[&str],
    rows: &[T],
    empty: &str,
    row: impl Fn(&T) -> Markup,
) -> Markup {
    html! {
        table id=(id) {
            thead { tr { @for h in headings { th { (h) } } } }
            tbody {
                @for r in rows { (row(r)) }
                @if rows.is_empty() { tr { td colspan=(headings.len()) { (empty) } } }
            }
        }
    }
}

/// A [`table`] of one page with its pager below; `list` is the list's URL with its filters.
pub fn paged_table<T>(
    id: &str,
    headings: &[&str],
    page: &Paged<T>,
    empty: &str,
    list: &str,
    row: impl Fn(&T) -> Markup,
) -> Markup {
    html! {
        (table(id, headings, &page.rows, empty, row))
        (pager(list, page.number, page.more))
    }
}

/// Links showing the list at `list` with each `?status=` of `options`; `shown` is marked.
pub fn filters(list: &str, options: &[&str], shown: &str) -> Markup {
    html! {
        nav.filters {
            @for s in options {
                a.current[*s == shown] href=(href(list, &[("status", s)])) { (s) }
            }
        }
    }
}

/// A search form over the list at `action` (`GET`, the text in `q`).
pub fn search_form(action: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        form.search method="get" action=(action) {
            label for="q" { (label) }
            input type="search" id="q" name="q" value=(value) placeholder=(placeholder) maxlength="200";
            button type="submit" { "Search" }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A form that is just one button posting to `action` (revoke, publish, close, ...).
pub fn button_form(action: &str, token: &str, class: &str, id: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(token))
            button type="submit" class=(class) data-id=(id) { (label) }
        }
    }
}

/// The outcome of an action: a success line, or the operator API's error message.
pub fn outcome(result: &Result<String, ApiError>) -> Markup {
    match result {
        Ok(done) => html! { p.notice.ok role="status" { (done) } },
        Err(e) => {
            e.log_cause();
            let detail: Vec<&str> = e
                .validation_issues()
                .iter()
                .map(|i| i.msg.as_str())
                .collect();
            html! {
                p.notice.error role="alert" {
                    (e.code().as_str()) ": " (e.message())
                    @if detail.len() > 1 { " (" (detail.join("; ")) ")" }
                }
            }
        }
    }
}

/// A whole number from the form field `field`, or the operator API's 422 for it.
pub fn whole(field: &str, text: &str) -> ApiResult<i64> {
    text.trim().parse().map_err(|_| {
        ApiError::invalid_field(
            &["body", field],
            "value_error",
            format!("{field} must be a whole number"),
        )
    })
}

/// A form field's text, trimmed; `None` when empty.
pub fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// `url` as a link when it is an absolute http(s) URL, else as text (a `javascript:` URL
/// from an agent's proof never becomes a link).
pub fn external_link(url: &str) -> Markup {
    let linkable = reqwest::Url::parse(url)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
    html! {
        @if linkable {
            a href=(url) rel="noreferrer noopener" target="_blank" { (url) }
        } @else {
            code { (url) }
        }
    }
}

/// Credits with their USD value.
pub fn credits(amount: i64) -> Markup {
    html! {
        span.amount { (amount) " cr" }
        " "
        span.usd { "($" (agentpmt_protocol::wire::credits_to_usd(amount)) ")" }
    }
}

/// An epoch-milliseconds time as RFC 3339.
pub fn time(ms: i64) -> String {
    crate::time::rfc3339_ms(ms)
}

/// One day of the chart.
#[derive(Debug, Clone)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub label: String,
    pub purchases: i64,
    pub tool_revenue: i64,
}

/// A grouped bar chart of purchases and tool revenue per day, drawn as SVG on the server
/// (presentation attributes only: the CSP forbids inline styles).
pub fn day_chart(days: &[Day]) -> Markup {
    const W: i64 = 720;
    const H: i64 = 220;
    const TOP: i64 = 20;
    const BOTTOM: i64 = 40;
    let max = days
        .iter()
        .map(|d| d.purchases.max(d.tool_revenue))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = days.len().max(1) as i64;
    let slot = W / n;
    let bar = (slot / 3).max(1);
    let plot = H - TOP - BOTTOM;
    let height = |v: i64| -> i64 { ((v as f64 / max as f64) * plot as f64).round() as i64 };
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (W) " " (H)}
            role="img" aria-label="Purchases and tool revenue per day, in credits" {
            title { "Purchases and tool revenue per day (credits); highest " (max) }
            line x1="0" y1=(H - BOTTOM) x2=(W) y2=(H - BOTTOM) stroke="#888" stroke-width="1" {}
            text x="4" y="14" font-size="11" fill="#444" { "max " (max) " cr" }
            @for (i, d) in days.iter().enumerate() {
                @let x = i as i64 * slot + slot / 6;
                @let hp = height(d.purchases);
                @let ht = height(d.tool_revenue);
                rect.purchases x=(x) y=(H - BOTTOM - hp) width=(bar) height=(hp) fill="#2f6fb3" {
                    title { (d.label) ": purchases " (d.purchases) " cr" }
                }
                rect.revenue x=(x + bar) y=(H - BOTTOM - ht) width=(bar) height=(ht) fill="#d08a1f" {
                    title { (d.label) ": tool revenue " (d.tool_revenue) " cr" }
                }
                @if i % 2 == 0 {
                    text x=(x) y=(H - BOTTOM + 14) font-size="10" fill="#444" { (d.label[5..].to_owned()) }
                }
            }
            rect x=(W - 230) y="4" width="10" height="10" fill="#2f6fb3" {}
            text x=(W - 216) y="13" font-size="11" fill="#444" { "purchases" }
            rect x=(W - 140) y="4" width="10" height="10" fill="#d08a1f" {}
            text x=(W - 126) y="13" font-size="11" fill="#444" { "tool revenue" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_match_their_text_literally() {
        assert_eq!(like_pattern("Ab%_\\c"), "%ab\\%\\_\\\\c%");
        assert_eq!(like_pattern(""), "%%");
        assert_eq!(
            href("/console/workflows", &[("q", "a b&c"), ("page", "")]),
            "/console/workflows?q=a+b%26c"
        );
    }

    #[test]
    fn only_http_urls_become_links() {
        let link = external_link("https://example.com/p?a=1&b=2").into_string();
        assert!(link.starts_with("<a href=\"https://example.com/p?a=1&amp;b=2\""));
        let script = external_link("javascript:alert(1)").into_string();
        assert!(!script.contains("href"), "{script}");
    }

    #[test]
    fn the_chart_scales_bars_to_the_largest_day() {
        let days = vec![
            Day {
                label: "2026-01-01".into(),
                purchases: 100,
                tool_revenue: 50,
            },
            Day {
                label: "2026-01-02".into(),
                purchases: 0,
                tool_revenue: 0,
            },
        ];
        let svg = day_chart(&days).into_string();
        // The plot is 160 high: 100 -> 160, 50 -> 80.
        assert!(svg.contains("height=\"160\""), "{svg}");
        assert!(svg.contains("height=\"80\""), "{svg}");
        assert!(svg.contains("2026-01-01: purchases 100 cr"));
    }
}

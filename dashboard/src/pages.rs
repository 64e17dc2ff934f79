//! The pages: one small HTML shell per page (navigation, a title, an empty
//! body) and one script, `app.js`, that fills it from the JSON API and
//! refreshes it every two seconds. No build step: the assets are in this
//! crate and compiled into the binary.

use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use std::collections::BTreeMap;

const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The pages, by path segment and title, in the navigation's order.
pub const PAGES: [(&str, &str); 10] = [
    ("", "Overview"),
    ("jobs", "Jobs"),
    ("actors", "Actors"),
    ("tasks", "Tasks"),
    ("objects", "Objects"),
    ("placement_groups", "Placement groups"),
    ("workers", "Workers"),
    ("training", "Training"),
    ("models", "Models"),
    ("serve", "Serve"),
];

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn shell(page: &str, title: &str, params: &BTreeMap<String, String>) -> Html<String> {
    let nav: String = PAGES
        .iter()
        .map(|(p, t)| {
            let class = if *p == page { " class=\"here\"" } else { "" };
            format!("<a href=\"/{p}\"{class}>{t}</a>")
        })
        .collect();
    let data: String = params
        .iter()
        .map(|(k, v)| {
            let k: String = k
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            format!(" data-{}=\"{}\"", k, escape(v))
        })
        .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Prism — {title}</title><link rel="stylesheet" href="/static/style.css"></head>
<body data-page="{page}"{data}>
<header><span class="brand">Prism</span><nav>{nav}</nav><span id="live" title="refreshes every 2 s">●</span></header>
<main><h1>{title}</h1><div id="content"><p class="muted">Loading…</p></div></main>
<script src="/static/app.js"></script></body></html>"#,
        title = escape(title),
        page = escape(page),
    ))
}

/// `/` and `/{page}`.
pub async fn page(
    path: Option<Path<String>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let name = path.map(|Path(p)| p).unwrap_or_default();
    match PAGES.iter().find(|(p, _)| *p == name) {
        Some((p, t)) => shell(p, t, &params).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            shell("missing", "No such page", &params),
        )
            .into_response(),
    }
}

/// `/nodes/{id}`: one node, its resources and its workers.
pub async fn node(Path(id): Path<String>) -> Response {
    let mut p = BTreeMap::new();
    p.insert("node".to_string(), id);
    shell("node", "Node", &p).into_response()
}

/// `/logs?node=N&pid=P`: one worker's log.
pub async fn log(Query(params): Query<BTreeMap<String, String>>) -> Response {
    shell("log", "Worker log", &params).into_response()
}

/// `/static/app.js`.
pub async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// `/static/style.css`.
pub async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_params_become_data_attributes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let mut p = BTreeMap::new();
        p.insert("node\"><script>".to_string(), "<b>".to_string());
        let Html(html) = shell("log", "Worker log", &p);
        assert!(html.contains("data-nodescript=\"&lt;b&gt;\""), "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }
}

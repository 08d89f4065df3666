//! The dashboard's frame: one layout with its style and its little script
//! embedded (no external fonts, scripts or requests), server-rendered with
//! `maud`. Its links are relative to the pipeline's base (`<base>`: `/`,
//! or `/p/{pipeline}/` when one server serves several), which the
//! request being answered carries ([`at_base`]).

use std::{future::Future, sync::Arc};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use maud::{DOCTYPE, Markup, PreEscaped, html};

tokio::task_local! {
    /// The base of the pipeline whose page is being answered.
    static BASE: Arc<str>;
}

/// Runs `answer` (a request's handling) with the pages' base `base`.
pub async fn at_base<F: Future>(base: Arc<str>, answer: F) -> F::Output {
    BASE.scope(base, answer).await
}

/// The base of the pages being answered (`/` outside [`at_base`]).
fn base() -> Arc<str> {
    BASE.try_with(Arc::clone).unwrap_or_else(|_| "/".into())
}

/// A redirect to `path`, relative to the pages' base.
pub fn redirect(path: &str) -> Redirect {
    Redirect::to(&format!("{}{path}", base()))
}

/// The style: readable at 1280x800 and on a phone.
const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f6f8}
header{background:#24292f;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;flex-wrap:wrap;align-items:center}
header a{color:#fff;text-decoration:none}header b{font-size:1.1em}
main{padding:1em;max-width:1200px;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.35em .6em;border-bottom:1px solid #e1e4e8;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.wrap{overflow-x:auto}
pre{background:#fff;border:1px solid #e1e4e8;padding:.6em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.bad{color:#b42318;font-weight:600}.ok{color:#067647}
.note{background:#fff8c5;padding:.5em .8em;border:1px solid #d4a72c}
form.inline{display:inline}button{cursor:pointer}
input[type=text],input[type=password]{padding:.3em;min-width:16em;max-width:100%}
svg.spark{width:120px;height:24px}
a.more{font-size:.85em;color:#57606a}
"#;

/// Refreshes the overview every 2 s and draws each stage's throughput
/// over the last minutes.
const SCRIPT: &str = r#"
const history = {};
async function refresh() {
  const table = document.getElementById('overview');
  if (!table) return;
  try {
    const answer = await fetch('dashboard/overview.json', {credentials: 'same-origin'});
    if (!answer.ok) return;
    const data = await answer.json();
    const now = Date.now() / 1000;
    for (const stage of data.stages) {
      const row = table.querySelector('tr[data-stage="' + CSS.escape(stage.name) + '"]');
      if (!row) continue;
      for (const cell of row.querySelectorAll('[data-field]')) {
        const value = stage[cell.dataset.field];
        cell.textContent = typeof value === 'boolean' ? (value ? 'yes' : '-') : value;
      }
      const points = history[stage.name] = history[stage.name] || [];
      points.push([now, stage.done]);
      while (points.length > 90) points.shift();
      const rates = points.slice(1).map((p, i) => (p[1] - points[i][1]) / Math.max(p[0] - points[i][0], 0.001));
      const rate = rates.length ? rates[rates.length - 1] : 0;
      row.querySelector('[data-rate]').textContent = rate.toFixed(1) + '/s';
      const max = Math.max(1, ...rates);
      const line = rates.map((r, i) => (i * 120 / 89).toFixed(1) + ',' + (23 - r / max * 22).toFixed(1)).join(' ');
      row.querySelector('polyline').setAttribute('points', line);
    }
    document.getElementById('blocked').textContent = data.broker_blocked ? 'the broker blocks publishing' : '';
  } catch (e) {}
}
refresh();
setInterval(refresh, 2000);
"#;

/// A page of a pipeline with the header and `body`.
pub fn page(title: &str, body: Markup) -> Markup {
    frame(title, body, true)
}

/// The page listing the pipelines of a server of several: its header
/// has no pipeline's links.
pub fn list_page(title: &str, body: Markup) -> Markup {
    frame(title, body, false)
}

fn frame(title: &str, body: Markup, pipeline: bool) -> Markup {
    let base = base();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                base href=(base);
                title { (title) " - warren" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    b { "warren" }
                    @if &*base != "/" || !pipeline { a href="/" { "Pipelines" } }
                    @if pipeline {
                        a href="./" { "Overview" }
                        a href="jobs" { "Jobs" }
                        a href="busy" { "Busy" }
                        a href="history" { "History" }
                        a href="processes" { "Processes" }
                    }
                }
                main { (PreEscaped(body.into_string())) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// The answer to an action on a dashboard without `serve.allow_actions`:
/// 403 and a page that says what `action` needs.
pub fn read_only(action: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        page(
            "Read-only",
            html! { p.bad { "This dashboard is read-only: " (action) " needs serve.allow_actions: true." } },
        ),
    )
        .into_response()
}

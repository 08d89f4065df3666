//! `GET /busy`: what every worker of this box's supervisors of the
//! pipeline handles right now and for how long, longest first: the
//! message, its job and attempt, the worker and its pid. From the
//! workers' reports (a second old at most, the 20 longest running per
//! worker and stage); a worker not under a supervisor on this box is not
//! seen (its box's `supervise --http` shows it).

use maud::{Markup, html};
use warren::{message::epoch_ms, running::Running};
use warren_ops::status;

use super::{page, span, urlencode};
use crate::App;

/// One handling, where it runs.
struct Row<'a> {
    stage: &'a str,
    index: u32,
    pid: u32,
    running: &'a Running,
}

/// The page.
pub async fn page_of(app: &App) -> Markup {
    let supervisors = status::query_all(&app.pipeline.name).await;
    let mut rows: Vec<Row<'_>> = Vec::new();
    for supervisor in &supervisors {
        for stage in &supervisor.stages {
            for process in &stage.processes {
                rows.extend(process.running.iter().map(|running| Row {
                    stage: &stage.name,
                    index: process.index,
                    pid: process.pid,
                    running,
                }));
            }
        }
    }
    rows.sort_by_key(|row| row.running.started_ms);
    let now = epoch_ms();
    let jobs = app.tickets.is_some();
    page(
        "Busy",
        html! {
            h1 { "Busy: what the workers of " (app.pipeline.name) " on this box handle now" }
            p #busy-count { (rows.len()) " message(s) being handled." }
            @if supervisors.is_empty() {
                p { "No supervisor of this pipeline runs on this box (warren supervise)." }
            }
            @if !rows.is_empty() {
                div.wrap {
                    table #busy {
                        tr {
                            th { "stage" } th { "worker" } th { "pid" } th { "message" }
                            th { "job" } th { "attempt" } th { "running for" }
                        }
                        @for row in &rows {
                            tr data-id=(row.running.id) data-pid=(row.pid) {
                                td { (row.stage) }
                                td.n { "#" (row.index) }
                                td.n { (row.pid) }
                                td { (row.running.id) }
                                td {
                                    @if jobs {
                                        a href=(format!("jobs?id={}", urlencode(&row.running.job))) { (row.running.job) }
                                    } @else { (row.running.job) }
                                }
                                td.n { (row.running.attempt) }
                                td.n data-field="for" { (span(now.saturating_sub(row.running.started_ms))) }
                            }
                        }
                    }
                }
            }
        },
    )
}

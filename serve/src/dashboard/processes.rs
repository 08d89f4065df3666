//! `GET /processes`: every worker process of this box's supervisors of the
//! pipeline, per stage: its pid, state, uptime and what it counted, with
//! the stage's restarts and how its last worker that failed ended (its
//! last lines). With `serve.allow_actions` and an admin, a stage's
//! workers can be restarted (replaced one at a time on every box, as by
//! `warren restart FILE STAGE`) after a confirmation page
//! (`POST /stages/{stage}/control`, `action=restart`).

use maud::{Markup, html};
use warren::message::epoch_ms;
use warren_ops::status::{self, SupervisorStatus};

use super::{page::page, span};
use crate::App;

/// The page.
pub async fn page_of(app: &App, actions: bool, done: Option<&str>) -> Markup {
    let supervisors = status::query_all(&app.pipeline.name).await;
    page(
        "Processes",
        html! {
            h1 { "Processes of " (app.pipeline.name) " on this box" }
            @if let Some(done) = done { p.ok #done { (done) } }
            @if supervisors.is_empty() {
                p #no-supervisor { "No supervisor of this pipeline runs on this box (warren supervise)." }
            }
            @for supervisor in &supervisors { (one(supervisor, actions)) }
        },
    )
}

fn one(supervisor: &SupervisorStatus, actions: bool) -> Markup {
    let now = epoch_ms();
    html! {
        h2 { "Supervisor pid " (supervisor.pid)
            @if supervisor.keeper.as_ref().is_some_and(|k| k.leader) { " (the job keeper)" } }
        div.wrap {
            table.processes data-supervisor=(supervisor.pid) {
                tr {
                    th { "stage" } th { "worker" } th { "pid" } th { "state" } th { "up" }
                    th { "in flight" } th { "done" } th { "retried" } th { "dead" }
                }
                @for stage in &supervisor.stages {
                    @for process in &stage.processes {
                        tr data-stage=(stage.name) data-pid=(process.pid) {
                            td { (stage.name) }
                            td.n { "#" (process.index) }
                            td.n data-field="pid" { @if process.pid > 0 { (process.pid) } @else { "-" } }
                            td data-field="state" { (process.state) }
                            td.n { @if process.started_ms > 0 { (span(now.saturating_sub(process.started_ms))) } @else { "-" } }
                            td.n { (process.counts.in_flight) }
                            td.n { (process.counts.done) }
                            td.n { (process.counts.retried) }
                            td.n { (process.counts.dead) }
                        }
                    }
                }
            }
        }
        @for stage in &supervisor.stages {
            div.stage data-stage=(stage.name) {
                p {
                    b { (stage.name) } ": " (stage.workers) " running, " (stage.target) " wanted, "
                    span data-field="restarts" { (stage.restarts) } " unexpected exits"
                    @if let Some(deploy) = &stage.deploy { "; " (deploy) }
                    @if actions {
                        " "
                        form.inline method="post" action=(format!("stages/{}/control", stage.name)) {
                            input type="hidden" name="action" value="restart";
                            button type="submit" data-action="restart" { "Restart its workers" }
                        }
                    }
                }
                @if let Some(exit) = &stage.last_exit {
                    p { "The last worker that failed:" }
                    pre.last-exit { (exit) }
                }
            }
        }
    }
}

/// The confirmation page of a restart of `stage`'s workers.
pub fn confirm_restart(stage: &str) -> Markup {
    page(
        "Restart workers",
        html! {
            h1 { "Restart the workers of " (stage) "?" }
            p { "Every supervisor of the pipeline, on every box, replaces the stage's workers one at a time: a new one first, an old one drained once the new one consumes (as `warren restart FILE " (stage) "`)." }
            form method="post" action=(format!("stages/{stage}/control")) {
                input type="hidden" name="action" value="restart";
                input type="hidden" name="confirmed" value="yes";
                button type="submit" data-action="confirm-restart" { "Restart" }
                " " a href="processes" { "Cancel" }
            }
        },
    )
}

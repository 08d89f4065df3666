//! The overview's schedules section: each schedule with its last tick and
//! its next.

use maud::{Markup, html};
use warren::schedule::{Phase, local_text};

use super::{App, urlencode};

/// The overview's schedules: each with its last tick (as this process's
/// job store knows it) and its next, as of the page's load.
pub(super) fn section(app: &App) -> Markup {
    if app.pipeline.schedules.is_empty() {
        return html! {};
    }
    let ticks = app
        .tickets
        .as_ref()
        .and_then(|tickets| tickets.ticks().ok())
        .unwrap_or_default();
    let now = warren::message::epoch_ms();
    html! {
        h2 { "Schedules" }
        div.wrap {
            table #schedules {
                tr { th { "schedule" } th { "cron" } th { "time zone" } th { "stage" } th { "last tick" } th { "next tick" } }
                @for schedule in &app.pipeline.schedules {
                    @let last = ticks.get(&schedule.name).copied();
                    @let (next, due) = schedule.next_tick(last, now);
                    tr data-schedule=(schedule.name) {
                        td { (schedule.name) }
                        td { code { (schedule.cron.as_str()) } }
                        td { (schedule.timezone.name()) }
                        td { (schedule.stage) }
                        td data-field="last" {
                            @match last {
                                Some(tick) if tick.phase != Phase::Armed => {
                                    a href=(format!("jobs?id={}", urlencode(&schedule.job_id(tick.at_ms)))) { (local_text(tick.at_ms, schedule.timezone)) }
                                    " (" (tick.phase.as_str()) ")"
                                }
                                _ => "none yet",
                            }
                        }
                        td data-field="next" {
                            @match (next, due) {
                                (_, true) => "due now (no keeper has fired it yet)",
                                (Some(at), false) => (local_text(at, schedule.timezone)),
                                (None, false) => "never",
                            }
                        }
                    }
                }
            }
        }
        p { "Ticks are fired by the job keeper (one supervisor of all boxes); as of this page's load." }
    }
}

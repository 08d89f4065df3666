//! `GET /history`: what each stage did over the last 24 hours, done,
//! retried and dead-lettered by the workers of this box's supervisors per
//! five minutes, drawn as one chart per stage, with the totals of the last
//! hour and day. From this server's memory (`crate::history`): it starts
//! again with the server; Prometheus keeps more.

use maud::{Markup, PreEscaped, html};
use warren::message::epoch_ms;

use super::page;
use crate::{
    App,
    history::{Counts, MINUTES},
};

/// Minutes per point of a chart.
const PER_POINT: usize = 5;

/// A chart's size in pixels.
const WIDTH: usize = MINUTES / PER_POINT * 3;
const HEIGHT: usize = 80;

/// The colours of done, retried and dead.
const COLOURS: [&str; 3] = ["#1a7f37", "#bf8700", "#cf222e"];

/// The page.
pub fn page_of(app: &App) -> Markup {
    let now = epoch_ms();
    let series: Vec<(String, Vec<Counts>)> = {
        let history = app.history.lock().expect("history");
        app.pipeline
            .stages
            .iter()
            .map(|stage| (stage.name.clone(), history.series(&stage.name, now)))
            .collect()
    };
    page(
        "History",
        html! {
            h1 { "The last 24 hours of " (app.pipeline.name) }
            p {
                "Messages done (" span style=(format!("color:{}", COLOURS[0])) { "green" } "), retried ("
                span style=(format!("color:{}", COLOURS[1])) { "amber" } ") and dead-lettered ("
                span style=(format!("color:{}", COLOURS[2])) { "red" } ") per five minutes by the workers of this box's supervisors, since this server started. Prometheus keeps the longer history (/metrics)."
            }
            div.wrap {
                table #history {
                    tr { th { "stage" } th { "last 24 hours" } th { "last hour" } th { "24 hours" } }
                    @for (stage, minutes) in &series {
                        @let hour = sum(&minutes[MINUTES - 60..]);
                        @let day = sum(minutes);
                        tr data-stage=(stage) {
                            td { (stage) }
                            td { (chart(minutes)) }
                            td.n data-field="hour" { (totals(hour)) }
                            td.n data-field="day" { (totals(day)) }
                        }
                    }
                }
            }
        },
    )
}

fn sum(minutes: &[Counts]) -> Counts {
    let mut sum = [0; 3];
    for counts in minutes {
        for i in 0..3 {
            sum[i] += counts[i];
        }
    }
    sum
}

fn totals(counts: Counts) -> String {
    format!(
        "{} done, {} retried, {} dead",
        counts[0], counts[1], counts[2]
    )
}

/// Three lines over the day, one point per [`PER_POINT`] minutes, on one
/// scale (the busiest point at the top).
fn chart(minutes: &[Counts]) -> Markup {
    let points: Vec<Counts> = minutes.chunks(PER_POINT).map(sum).collect();
    let top = points.iter().flatten().copied().max().unwrap_or(0).max(1);
    let step = WIDTH as f64 / (points.len().max(2) - 1) as f64;
    let line = |i: usize| -> String {
        points
            .iter()
            .enumerate()
            .map(|(n, p)| {
                let y = HEIGHT as f64 - 2.0 - (p[i] as f64 / top as f64) * (HEIGHT as f64 - 4.0);
                format!("{:.0},{y:.1}", n as f64 * step)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.history viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
            @for i in 0..3 {
                polyline fill="none" stroke=(COLOURS[i]) stroke-width="1.5" points=(PreEscaped(line(i))) {}
            }
            text x="2" y="10" font-size="10" fill="#57606a" { (top) " per 5 min" }
            text x=(WIDTH - 2) y="10" font-size="10" fill="#57606a" text-anchor="end" { "now" }
        }
    }
}

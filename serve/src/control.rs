//! Stage control over HTTP (DESIGN.md, *Stage control*):
//! `POST /v1/stages/{stage}/pause` and `.../resume`, and the dashboard's
//! buttons, all through [`set`]: one change on the pipeline's pause stream
//! (`Producer::set_paused`), logged with who asked.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tracing::info;

use crate::{App, ingest::refuse};

/// `POST /v1/stages/{stage}/pause`.
pub async fn pause(State(app): State<App>, Path(stage): Path<String>) -> Response {
    set(&app, &stage, true, "POST /v1/stages/{stage}/pause").await
}

/// `POST /v1/stages/{stage}/resume`.
pub async fn resume(State(app): State<App>, Path(stage): Path<String>) -> Response {
    set(&app, &stage, false, "POST /v1/stages/{stage}/resume").await
}

/// Pauses or resumes `stage`: 200 with `{"stage", "paused"}` once the
/// broker confirmed the change, 404 for a stage the pipeline does not
/// have, 503 when the broker did not take it.
pub async fn set(app: &App, stage: &str, paused: bool, route: &str) -> Response {
    if app.pipeline.stage(stage).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "pipeline `{}` has no stage `{stage}`; its stages are: {}",
                app.pipeline.name,
                app.pipeline.stage_names().join(", ")
            ),
            json!({}),
        );
    }
    let by = format!("{route} on warren serve pid {}", std::process::id());
    match app.producer.set_paused(stage, paused, &by).await {
        Ok(()) => {
            info!(%stage, paused, %route, "stage {} on every box", if paused { "paused" } else { "resumed" });
            (
                StatusCode::OK,
                Json(json!({ "stage": stage, "paused": paused })),
            )
                .into_response()
        }
        Err(error) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the change was not written: {error}"),
            json!({}),
        ),
    }
}

//! The binary's job store and tracker, compiled into the benchmark from
//! their sources (the `warren` binary has no library to link against).

#[allow(dead_code, unused_imports)]
#[path = "../../supervisor/src/jobs/attach.rs"]
pub mod attach;
#[allow(dead_code, unused_imports)]
#[path = "../../supervisor/src/jobs/resume.rs"]
pub mod resume;
#[allow(dead_code, unused_imports)]
#[path = "../../supervisor/src/jobs/store.rs"]
pub mod store;
#[allow(dead_code, unused_imports)]
#[path = "../../supervisor/src/jobs/tracker.rs"]
pub mod tracker;

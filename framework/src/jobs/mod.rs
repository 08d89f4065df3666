//! Jobs (DESIGN.md, *Jobs*): a job is a message that entered the pipeline
//! and everything emitted from it. With `jobs.track`, every handling's
//! outcome goes to the pipeline's job stream as an [`Event`]; folding a
//! job's events gives its [`JobView`].

pub mod event;
pub mod state;

pub use event::{Emitted, Event, What};
pub use state::{DeadLetter, JobRecord, JobState, JobView, StageCounts};

//! Jobs (DESIGN.md, *Jobs*): a job is a message that entered the pipeline
//! and everything emitted from it. With `jobs.track`, every handling's
//! outcome goes to the pipeline's job stream as an [`Event`]; folding a
//! job's events gives its [`JobRecord`], shown as a [`JobView`].

pub mod event;
pub mod state;
mod stored;
pub mod view;

pub use event::{Emission, Event, Fraction, What};
pub use state::{Gathered, JobDeadLetter, JobRecord, JobState, Progress};
pub use view::{CallbackView, JobStageCounts, JobView};

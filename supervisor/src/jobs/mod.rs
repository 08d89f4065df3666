//! Job tracking on this box: the [`store`] of job records and the
//! [`tracker`] that folds the pipeline's job stream into it.

pub mod store;
pub mod tracker;

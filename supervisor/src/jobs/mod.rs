//! Job tracking on this box: the [`store`] of job records and the
//! [`tracker`] that folds the pipeline's job stream into it; the
//! [`keeper`] (one supervisor of the pipeline at a time) and its
//! [`duties`]: gathers released, [`callback`]s POSTed; and how
//! `warren run` waits for its jobs ([`settling`]).

pub mod callback;
pub mod duties;
pub mod keeper;
pub mod resume;
pub mod settling;
pub mod store;
pub mod tracker;

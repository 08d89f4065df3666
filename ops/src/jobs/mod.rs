//! Job tracking on this box: the [`store`] of job records and the
//! [`tracker`] that folds the pipeline's job stream into it (where it
//! starts: [`attach`], [`resume`]); the [`keeper`] (one supervisor of the
//! pipeline at a time, elected by its [`token`]) and its [`duties`]:
//! gathers released ([`gathered`] sizes), [`callback`]s POSTed, the
//! [`schedules`]' ticks fired; and how
//! `warren run` waits for its jobs ([`settling`]).

pub mod attach;
pub mod callback;
pub mod duties;
pub mod gathered;
pub mod keeper;
pub mod resume;
pub mod schedules;
pub mod settling;
pub mod store;
pub mod token;
pub mod tracker;

//! The built-in stages, run by `warren worker FILE --stage S`.

pub mod exec;
pub mod http;
pub mod postgres;
pub mod sink;

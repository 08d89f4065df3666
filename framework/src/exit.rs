//! Process exit codes (DESIGN.md): the one place they are written down,
//! for the `warren` binary and for worker programs built on the framework.

/// Success.
pub const SUCCESS: u8 = 0;
/// A failure at run time.
pub const FAILURE: u8 = 1;
/// Wrong usage of the command line.
pub const USAGE: u8 = 2;
/// Bad input data (an input file, a message).
pub const DATA_ERR: u8 = 65;
/// The broker cannot be reached, or refused the login.
pub const UNAVAILABLE: u8 = 69;
/// The pipeline file or the worker's setup is wrong: restarting the same
/// program will not help.
pub const CONFIG: u8 = 78;

//! The durable interaction log: every trajectory and feedback the engine acknowledged, in an
//! embedded SQLite database (WAL mode) written by one background thread with group commit.
//!
//! - [`record`]: [`Record`] (trajectory or feedback), its validation and blob encoding.
//! - [`schema`]: the table layout and its version.
//! - [`writer`]: [`Log`], the bounded queue, the writer thread, [`Durability`] modes and retention.
//! - [`reader`]: [`LogReader`], validated reads in sequence order (replay and export).
//!
//! Every record gets a sequence number, strictly increasing in the order the engine handed records
//! over; a checkpoint stores the last sequence number it reflects and replay starts after it.

pub mod reader;
pub mod record;
pub mod schema;
pub mod writer;

pub use reader::LogReader;
pub use record::{FeedbackRec, Logged, Record, TrajectoryRec};
pub use writer::{Durability, Log, LogConfig};
